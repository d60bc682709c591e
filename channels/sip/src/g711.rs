//! G.711 μ-law (PCMU) and A-law (PCMA) to and from 16-bit linear PCM (ITU-T G.711).
//!
//! Written here because it is a few lines of arithmetic fixed by the standard and no
//! maintained crate offers it alone; decoding goes through 256-entry tables built at
//! compile time, so a sample costs one load.

/// RTP payload type of PCMU.
pub const PCMU: u8 = 0;
/// RTP payload type of PCMA.
pub const PCMA: u8 = 8;

const fn ulaw_to_linear(byte: u8) -> i16 {
    let u = !byte;
    let sign = u & 0x80;
    let exponent = (u >> 4) & 0x07;
    let mantissa = (u & 0x0f) as i32;
    let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    if sign != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

const fn alaw_to_linear(byte: u8) -> i16 {
    let a = byte ^ 0x55;
    let sign = a & 0x80;
    let exponent = ((a >> 4) & 0x07) as i32;
    let mantissa = (a & 0x0f) as i32;
    let magnitude = if exponent == 0 {
        (mantissa << 4) + 8
    } else {
        ((mantissa << 4) + 0x108) << (exponent - 1)
    };
    if sign != 0 {
        magnitude as i16
    } else {
        -magnitude as i16
    }
}

const fn table(alaw: bool) -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = if alaw {
            alaw_to_linear(i as u8)
        } else {
            ulaw_to_linear(i as u8)
        };
        i += 1;
    }
    t
}

static ULAW: [i16; 256] = table(false);
static ALAW: [i16; 256] = table(true);

/// Decodes a G.711 payload of payload type `pt` into `out` (cleared first). Returns
/// `false` for a payload type that is not G.711.
pub fn decode(pt: u8, payload: &[u8], out: &mut Vec<i16>) -> bool {
    let table = match pt {
        PCMU => &ULAW,
        PCMA => &ALAW,
        _ => return false,
    };
    out.clear();
    out.extend(payload.iter().map(|b| table[usize::from(*b)]));
    true
}

/// Encodes one linear sample to μ-law.
pub fn encode_ulaw(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 32_635;
    let mut s = i32::from(sample);
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    s = s.min(CLIP) + BIAS;
    let exponent = (31 - (s as u32).leading_zeros()).saturating_sub(7).min(7);
    let mantissa = (s >> (exponent + 3)) & 0x0f;
    !(sign | ((exponent as i32) << 4) as u8 | mantissa as u8)
}

/// Encodes one linear sample to A-law.
pub fn encode_alaw(sample: i16) -> u8 {
    let mut s = i32::from(sample);
    let sign = if s >= 0 {
        0x80
    } else {
        s = -s - 1;
        0
    };
    s = s.min(32_767);
    let byte = if s < 256 {
        (s >> 4) as u8
    } else {
        let exponent = (31 - (s as u32).leading_zeros()) - 7;
        let mantissa = (s >> (exponent + 3)) & 0x0f;
        ((exponent as u8) << 4) | mantissa as u8
    };
    (sign | byte) ^ 0x55
}

/// Encodes samples for payload type `pt` (PCMU or PCMA).
pub fn encode(pt: u8, samples: &[i16], out: &mut Vec<u8>) {
    out.clear();
    if pt == PCMA {
        out.extend(samples.iter().map(|s| encode_alaw(*s)));
    } else {
        out.extend(samples.iter().map(|s| encode_ulaw(*s)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        assert_eq!(ULAW[0xff], 0);
        assert_eq!(ULAW[0x00], -32_124);
        assert_eq!(ULAW[0x80], 32_124);
        assert_eq!(ALAW[0xd5], 8);
        assert_eq!(ALAW[0x55], -8);
        assert_eq!(ALAW[0xaa], 32_256);
    }

    #[test]
    fn every_code_round_trips() {
        for b in 0..=255u8 {
            // μ-law has two zeros (0x7f and 0xff); both decode to 0 and 0 encodes to 0xff.
            if b != 0x7f {
                assert_eq!(encode_ulaw(ULAW[usize::from(b)]), b, "ulaw {b:#x}");
            }
            assert_eq!(encode_alaw(ALAW[usize::from(b)]), b, "alaw {b:#x}");
        }
    }

    proptest::proptest! {
        #[test]
        fn encoding_error_is_small(s in proptest::prelude::any::<i16>()) {
            let u = i32::from(ULAW[usize::from(encode_ulaw(s))]);
            let a = i32::from(ALAW[usize::from(encode_alaw(s))]);
            let tol = (i32::from(s).abs() / 16).max(16);
            proptest::prop_assert!((u - i32::from(s)).abs() <= tol, "ulaw {} -> {}", s, u);
            proptest::prop_assert!((a - i32::from(s)).abs() <= tol, "alaw {} -> {}", s, a);
        }
    }
}
