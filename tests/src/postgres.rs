//! A throwaway PostgreSQL cluster for the ticket service's tests: initdb in a temporary
//! directory, a server on a free loopback port, database `tickets`, and a `psql` to look
//! at what the service wrote. It runs the server binaries directly (not
//! deploy/postgres.sh), so the tests depend on PostgreSQL alone, never on the system
//! service or on a cluster someone else started.
//!
//! initdb and postgres refuse to run as root, and CI runs as root: then the cluster's
//! directory is chowned to the `postgres` system user (created by Debian's package) and
//! the server-side commands run through `runuser -u postgres --`. The clients (createdb,
//! psql) connect over TCP as the database user `postgres` with trust authentication, so
//! they run as whoever runs the tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result, bail};

use crate::free_port;

/// What to tell someone whose machine has no PostgreSQL.
const INSTALL_HINT: &str = "install Debian's postgresql package: deploy/postgres.sh install";

/// The server's settings: a test cluster trades durability for speed (its data dies with
/// it anyway) and allows many connections (each test's pool opens several).
const SERVER_SETTINGS: &str = "-c listen_addresses=127.0.0.1 -c fsync=off \
     -c synchronous_commit=off -c full_page_writes=off -c max_connections=200";

/// A running PostgreSQL cluster in a temporary directory; stopped and removed on drop.
pub struct Postgres {
    port: u16,
    bin: PathBuf,
    as_postgres_user: bool,
    dir: tempfile::TempDir,
}

impl Postgres {
    /// Initializes a cluster (UTF8, trust authentication, no fsync), starts it on a free
    /// port of 127.0.0.1 with its unix socket in its own directory, and creates database
    /// `tickets`. Returns once the database accepts connections.
    pub fn start() -> Result<Postgres> {
        let bin = bin_dir()?;
        let as_postgres_user = running_as_root()?;
        let dir = tempfile::tempdir().context("a temporary directory for postgres")?;
        if as_postgres_user {
            chown_to_postgres(dir.path())?;
        }
        let mut pg = Postgres {
            port: free_port(),
            bin,
            as_postgres_user,
            dir,
        };
        pg.initdb()?;
        // free_port() releases the port before the server binds it: if someone took it in
        // between, try another.
        let mut attempt = 1;
        while let Err(e) = pg.pg_ctl_start() {
            if attempt == 3 {
                return Err(e);
            }
            attempt += 1;
            pg.port = free_port();
        }
        let out = Command::new(pg.bin.join("createdb"))
            .args(["-h", "127.0.0.1", "-p", &pg.port.to_string()])
            .args(["-U", "postgres", "tickets"])
            .output()
            .context("running createdb")?;
        check(&out, "createdb tickets")?;
        Ok(pg)
    }

    /// The URL of database `tickets`: `postgres://postgres@127.0.0.1:PORT/tickets`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/tickets", self.port)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Runs `sql` with `psql -At -c` on database `tickets` and returns its output,
    /// trimmed (one row a line, columns separated by `|`); an error carries psql's stderr.
    pub fn psql(&self, sql: &str) -> Result<String> {
        let out = Command::new(self.bin.join("psql"))
            // -X: no ~/.psqlrc, whose settings would change the output.
            .args([
                "-X",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                &self.url(),
                "-c",
                sql,
            ])
            .output()
            .context("running psql")?;
        check(&out, &format!("psql -c {sql:?}"))?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// A server-side command (initdb, pg_ctl), as the postgres user when we are root,
    /// run from the cluster's directory (the postgres user may not enter ours).
    fn server_command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        let mut cmd = if self.as_postgres_user {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(program);
            cmd
        } else {
            Command::new(program)
        };
        cmd.current_dir(self.dir.path());
        cmd
    }

    fn initdb(&self) -> Result<()> {
        let out = self
            .server_command("initdb")
            .arg("-D")
            .arg(self.data_dir())
            // --no-locale: the same byte-order collation whatever the caller's LANG, and
            // no failure when LANG names a locale this machine lacks.
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-locale"])
            .arg("--no-sync")
            .output()
            .context("running initdb")?;
        check(&out, "initdb")
    }

    fn pg_ctl_start(&self) -> Result<()> {
        // pg_ctl hands -o to a shell: quote the socket directory. The socket lives in the
        // cluster's directory, never /var/run/postgresql, so no other cluster clashes.
        let options = format!(
            "-p {} -k '{}' {SERVER_SETTINGS}",
            self.port,
            self.dir.path().display()
        );
        let out = self
            .server_command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-o", &options, "-w", "-t", "60", "-l"])
            .arg(self.log_path())
            .arg("start")
            .stdin(Stdio::null())
            .output()
            .context("running pg_ctl start")?;
        check(&out, "pg_ctl start").with_context(|| format!("postgres log:\n{}", self.log()))
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Immediate: the data is thrown away with the directory right after.
        let _ = self
            .server_command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", "immediate", "-w", "stop"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The PostgreSQL server binaries: `$PG_BIN`, else the newest
/// `/usr/lib/postgresql/<version>/bin` with an initdb (where Debian puts them, off PATH),
/// else the directory of `initdb` on PATH.
pub fn bin_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("PG_BIN") {
        let dir = PathBuf::from(dir);
        if !dir.join("initdb").is_file() {
            bail!("PG_BIN={} has no initdb; {INSTALL_HINT}", dir.display());
        }
        return Ok(dir);
    }
    let mut newest: Option<(Vec<u32>, PathBuf)> = None;
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        for entry in entries.flatten() {
            let bin = entry.path().join("bin");
            if !bin.join("initdb").is_file() {
                continue;
            }
            // "15", "9.6": compare numerically, so 10 is newer than 9.6.
            let version: Vec<u32> = entry
                .file_name()
                .to_string_lossy()
                .split('.')
                .map(|part| part.parse().unwrap_or(0))
                .collect();
            if newest.as_ref().is_none_or(|(v, _)| version > *v) {
                newest = Some((version, bin));
            }
        }
    }
    if let Some((_, bin)) = newest {
        return Ok(bin);
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            if dir.join("initdb").is_file() {
                return Ok(dir);
            }
        }
    }
    bail!(
        "no PostgreSQL server binaries (no /usr/lib/postgresql/*/bin/initdb, no initdb on PATH, no PG_BIN); {INSTALL_HINT}"
    )
}

/// Whether this process's effective uid is 0 (the owner of `/proc/self`).
fn running_as_root() -> Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata("/proc/self").context("reading /proc/self")?;
    Ok(meta.uid() == 0)
}

/// Gives `dir` to the postgres user and checks that the user can write in it (it cannot
/// when a parent directory is closed to it, e.g. a TMPDIR under /root).
fn chown_to_postgres(dir: &Path) -> Result<()> {
    let out = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(dir)
        .output()
        .context("running chown")?;
    check(
        &out,
        "chown -R postgres:postgres (running as root, postgres must own the cluster; the postgres user comes with Debian's postgresql package)",
    )?;
    let reachable = Command::new("runuser")
        .args(["-u", "postgres", "--", "test", "-w"])
        .arg(dir)
        .status()
        .context("running runuser")?
        .success();
    if !reachable {
        bail!(
            "the postgres user cannot write in {} (is a parent directory closed to it? set TMPDIR to a directory under /tmp)",
            dir.display()
        );
    }
    Ok(())
}

/// An error with the command's stderr (and stdout, where initdb and pg_ctl also talk)
/// when it failed.
fn check(out: &Output, what: &str) -> Result<()> {
    if out.status.success() {
        return Ok(());
    }
    bail!(
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim(),
        match String::from_utf8_lossy(&out.stdout).trim() {
            "" => String::new(),
            stdout => format!("\n{stdout}"),
        }
    )
}
