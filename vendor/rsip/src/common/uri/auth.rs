pub use crate::Error;
#[doc(hidden)]
pub use tokenizer::Tokenizer;

/// Simple struct that holds the authority part on of a URI.
#[derive(Debug, PartialEq, Eq, Clone)]
pub struct Auth {
    pub user: String,
    pub password: Option<String>,
}

impl std::fmt::Display for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.password {
            Some(password) => write!(f, "{}:{}", self.user, password),
            None => write!(f, "{}", self.user),
        }
    }
}

impl<T, S> From<(T, Option<S>)> for Auth
where
    T: Into<String>,
    S: Into<String>,
{
    fn from(from: (T, Option<S>)) -> Self {
        Self {
            user: from.0.into(),
            password: from.1.map(|p| p.into()),
        }
    }
}

impl<'a> std::convert::TryFrom<tokenizer::Tokenizer<'a, &'a str, char>> for Auth {
    type Error = Error;

    fn try_from(tokenizer: tokenizer::Tokenizer<'a, &'a str, char>) -> Result<Self, Self::Error> {
        Ok(Auth {
            user: tokenizer.user.into(),
            password: tokenizer.password.map(Into::into),
        })
    }
}

impl<'a> std::convert::TryFrom<tokenizer::Tokenizer<'a, &'a [u8], u8>> for Auth {
    type Error = Error;

    fn try_from(tokenizer: tokenizer::Tokenizer<'a, &'a [u8], u8>) -> Result<Self, Self::Error> {
        use std::str::from_utf8;

        Self::try_from(Tokenizer::from((
            from_utf8(tokenizer.user)?,
            tokenizer.password.map(from_utf8).transpose()?,
        )))
    }
}

#[doc(hidden)]
pub mod tokenizer {
    use crate::{AbstractInput, AbstractInputItem, GResult, GenericNomError, TokenizerError};
    use std::marker::PhantomData;

    #[derive(Debug, PartialEq, Eq, Clone)]
    pub struct Tokenizer<'a, T, I>
    where
        T: AbstractInput<'a, I>,
        I: AbstractInputItem<I>,
    {
        pub user: T,
        pub password: Option<T>,
        phantom1: PhantomData<&'a T>,
        phantom2: PhantomData<I>,
    }

    impl<'a, T, I> From<(T, Option<T>)> for Tokenizer<'a, T, I>
    where
        T: AbstractInput<'a, I>,
        I: AbstractInputItem<I>,
    {
        fn from(from: (T, Option<T>)) -> Self {
            Self {
                user: from.0,
                password: from.1,
                phantom1: PhantomData,
                phantom2: PhantomData,
            }
        }
    }

    impl<'a, T, I> Tokenizer<'a, T, I>
    where
        T: AbstractInput<'a, I>,
        I: AbstractInputItem<I>,
    {
        pub fn tokenize(part: T) -> GResult<T, Self> {
            use nom::{
                bytes::complete::{tag, take_till, take_until},
                combinator::rest,
                sequence::tuple,
            };

            // Patched (vendor/README.md): the userinfo runs to its `@`, whatever
            // RFC 3261's `user` allows on the way: `.`, and the user-unreserved
            // `& = + $ , ; ? /` (RFC 3261 §25.1; RFC 4475 3.1.1.9 "semiuri":
            // `sip:user;par=u%40example.net@example.com`). Published 0.4.0 stopped at the
            // first `.`, so such a user (and `first.last@host`) was read as part of the
            // host. It stops at what no userinfo holds (whitespace, quotes, angle
            // brackets, an IPv6 reference's `[`), so a URI without a user still parses
            // as a host.
            let (rem, (auth, _)) = tuple((
                take_till(|c| {
                    [b'@', b' ', b'\t', b'\r', b'\n', b'"', b'<', b'>', b'[']
                        .iter()
                        .any(|&stop| c == Into::<I>::into(stop))
                }),
                tag("@"),
            ))(part)
            .map_err(|_: GenericNomError<'a, T>| {
                TokenizerError::from(("auth user", part)).into()
            })?;

            let (user, password) = match tuple::<_, _, nom::error::VerboseError<T>, _>((
                take_until(":"),
                tag(":"),
                rest,
            ))(auth)
            {
                Ok((_, (user, _, password))) => (user, Some(password)),
                Err(_) => {
                    //this is not going to ever fail actually, since rest never returns an
                    //error
                    let (_, user) = rest(auth).map_err(|_: GenericNomError<'a, T>| {
                        TokenizerError::from(("auth user (no password)", auth)).into()
                    })?;
                    (user, None)
                }
            };

            Ok((rem, Tokenizer::from((user, password))))
        }
    }
}

#[cfg(feature = "test-utils")]
impl testing_utils::Randomize for Auth {
    fn random() -> Self {
        use testing_utils::{rand_str_of, sample};

        Self {
            user: rand_str_of(7),
            password: sample(&[Some(rand_str_of(10)), None]),
        }
    }
}

#[cfg(test)]
mod user_part_tests {
    use crate::Uri;
    use std::convert::TryFrom;

    /// RFC 4475 3.1.1.9: the user part may hold `;`, `=` and escapes; and a `.`.
    #[test]
    fn a_user_part_with_reserved_characters_is_the_user() {
        let uri = Uri::try_from("sip:user;par=u%40example.net@example.com").expect("semiuri");
        assert_eq!(uri.user(), Some("user;par=u%40example.net"));
        assert_eq!(uri.host_with_port.to_string(), "example.com");
        assert_eq!(uri.to_string(), "sip:user;par=u%40example.net@example.com");
        let uri = Uri::try_from("sip:first.last@example.com;transport=tcp").expect("dot");
        assert_eq!(uri.user(), Some("first.last"));
        assert_eq!(uri.host_with_port.to_string(), "example.com");
        assert_eq!(uri.params.len(), 1);
        let uri = Uri::try_from("sip:example.com;transport=tcp").expect("no user");
        assert_eq!(uri.user(), None);
        assert_eq!(uri.host_with_port.to_string(), "example.com");
        let uri = Uri::try_from("sip:alice:secret@[2001:db8::1]:5060").expect("v6 host");
        assert_eq!(uri.user(), Some("alice"));
        assert_eq!(uri.host_with_port.to_string(), "[2001:db8::1]:5060");
    }
}
