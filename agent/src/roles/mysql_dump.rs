//! Loading a mysql Service's SQL dump (its code version) into the node's MariaDB, as a task of
//! its own: a large dump takes minutes, and the agent keeps reporting and renewing its heartbeat
//! meanwhile. A dump is the user's text: it runs as the Service's user (rights on its database
//! only), through the client's sandbox (no `\!` shell escapes, no files), and the note that it
//! loaded is kept where that user cannot reach (`conpaas-agent`.`dumps`, replicated by Galera).
//!
//! Saving the database when the Service stops, and loading it back when it starts: the agent's
//! own dump of the Service's database and of those notes (so code versions loaded before the
//! stop are not loaded again), gzipped into the artifact store through the code API.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use conpaas_crds::v1alpha1::NodeCode;
use kube::Client;

use crate::code;
use crate::daemon;

/// Why a dump is not in the database.
pub enum DumpError {
    /// Something to wait for (the node's credentials catching up with its spec).
    Waiting(String),
    /// Refused; MariaDB's words.
    Failed(String),
}

/// The table noting which dumps are in, by sha256: in a schema whose name (with a `-`) no
/// Service's `database` setting can take, so no Service user has rights on it (Galera does not
/// replicate tables of the `mysql` schema).
pub const LOADED_TABLE: &str = "`conpaas-agent`.dumps";
/// Makes the notes' table.
const NOTES_TABLE: &str = "CREATE DATABASE IF NOT EXISTS `conpaas-agent`;
     CREATE TABLE IF NOT EXISTS `conpaas-agent`.dumps (sha256 CHAR(64) PRIMARY KEY, version VARCHAR(63), at TIMESTAMP DEFAULT CURRENT_TIMESTAMP) ENGINE=InnoDB;";
/// The most SQL a gzipped dump may unpack to.
const MAX_SQL_BYTES: u64 = 16 << 30;

/// How far a load is, for the node's report: a large one takes minutes, and one that stops
/// moving must show it.
#[derive(Debug, Default)]
pub struct LoadProgress {
    /// Bytes of SQL sent to MariaDB so far.
    sent: AtomicU64,
    /// Bytes of SQL in all (0 while it is still downloaded).
    total: AtomicU64,
}

impl LoadProgress {
    /// " (12 of 200 MiB in)" once the SQL's size is known, else nothing.
    pub fn describe(&self) -> String {
        let total = self.total.load(Ordering::Relaxed);
        if total == 0 {
            return String::new();
        }
        let mib = |bytes: u64| bytes.div_ceil(1 << 20);
        format!(
            " ({} of {} MiB in)",
            mib(self.sent.load(Ordering::Relaxed)),
            mib(total)
        )
    }
}

/// Where a dump comes from and goes to.
pub struct DumpLoad {
    pub client: Client,
    pub namespace: String,
    pub service: String,
    /// The node's own server: its socket (for the note, as root) and `host:port` (for the dump,
    /// as the Service's user).
    pub socket: PathBuf,
    pub address: String,
    pub user: String,
    pub password: String,
    pub database: String,
    pub work_dir: PathBuf,
    /// The data this agent saved at the last stop (loaded as root, since it holds the notes
    /// too), not a user's dump.
    pub saved: bool,
    pub progress: Arc<LoadProgress>,
}

impl DumpLoad {
    /// Downloads `dump`, loads it into the database and notes it in `conpaas-agent`.`dumps`.
    pub async fn run(self, dump: NodeCode) -> Result<(), DumpError> {
        let version = &dump.version;
        let what = if self.saved {
            "the data saved at the last stop".to_string()
        } else {
            format!("code version {version} (SQL dump)")
        };
        let failed = |e: String| DumpError::Failed(format!("{what}: {e}"));
        let dir = self.work_dir.join("code");
        std::fs::create_dir_all(&dir)
            .map_err(|e| failed(format!("create {}: {e}", dir.display())))?;
        let file = dir.join(format!("dump-{}.sql", dump.sha256.get(..12).unwrap_or("")));
        if let Err(e) =
            code::download(&self.client, &self.namespace, &self.service, &dump, &file).await
        {
            return Err(if code::is_forbidden(&e) {
                DumpError::Waiting(format!("{what}: {e:#}"))
            } else {
                failed(format!("{e:#}"))
            });
        }
        // A user's dump is capped; the data saved at the last stop comes back whole, as far as
        // the disk holds it.
        let cap = if self.saved {
            code::free_bytes(&dir) / 10 * 9
        } else {
            MAX_SQL_BYTES
        };
        let loaded = match sql_file(&file, cap) {
            Ok(sql) => {
                let loaded = self.load(&sql).await;
                let _ = std::fs::remove_file(&sql);
                loaded
            }
            Err(e) => Err(e),
        };
        let _ = std::fs::remove_file(&file);
        loaded.map_err(failed)?;
        let note = format!(
            "{NOTES_TABLE}
             INSERT IGNORE INTO {LOADED_TABLE} (sha256, version) VALUES ('{}', '{}');",
            quote(&dump.sha256),
            quote(version)
        );
        run_sql(&self.socket, &note)
            .await
            .map(|_| ())
            .map_err(|e| failed(format!("loaded, but noting it failed: {e}")))
    }
}

impl DumpLoad {
    /// Streams the SQL at `sql` into the database as the Service's user, sandboxed; MariaDB's
    /// words when it refuses.
    async fn load(&self, sql: &Path) -> Result<(), String> {
        let client = daemon::find(&["mariadb", "mysql"], "mariadb-client")?;
        let (host, port) = self
            .address
            .rsplit_once(':')
            .unwrap_or((&self.address, "3306"));
        let mut command = tokio::process::Command::new(client);
        if self.saved {
            // Its own dump names its databases.
            command
                .arg(format!("--socket={}", self.socket.display()))
                .args(["--user", "root", "--sandbox", "--batch"]);
        } else {
            command
                .args(["--host", host, "--port", port, "--user", &self.user])
                .args(["--sandbox", "--batch", "--database", &self.database])
                // The password by the environment, not a command line others can read.
                .env("MYSQL_PWD", &self.password);
        }
        let mut child = command
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("run the mariadb client: {e}"))?;
        let mut stdin = child.stdin.take().expect("piped");
        let mut file = tokio::fs::File::open(sql)
            .await
            .map_err(|e| format!("read {}: {e}", sql.display()))?;
        let size = file.metadata().await.map_or(0, |m| m.len());
        self.progress.total.store(size.max(1), Ordering::Relaxed);
        let progress = self.progress.clone();
        let pid = child.id();
        let writer = async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut buffer = vec![0; 1 << 20];
            loop {
                let read = match file.read(&mut buffer).await {
                    Ok(0) => return Ok(()),
                    Ok(read) => read,
                    Err(e) => {
                        // Killed while its input is still open: the client must not take the
                        // end of its input for the end of the dump.
                        if let Some(pid) = pid {
                            let _ = nix::sys::signal::kill(
                                nix::unistd::Pid::from_raw(pid as i32),
                                nix::sys::signal::Signal::SIGKILL,
                            );
                        }
                        return Err(format!("read {}: {e}", sql.display()));
                    }
                };
                // MariaDB's own error says more than the broken pipe it leaves.
                if stdin.write_all(&buffer[..read]).await.is_err() {
                    return Ok(());
                }
                progress.sent.fetch_add(read as u64, Ordering::Relaxed);
            }
        };
        let (fed, out) = tokio::join!(writer, child.wait_with_output());
        fed?;
        let out = out.map_err(|e| format!("run the mariadb client: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "did not load: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }
}

/// Where a stopping Service's database is saved from and to.
pub struct SaveData {
    pub client: Client,
    pub namespace: String,
    pub service: String,
    /// The node's own server's socket (the dump runs as root).
    pub socket: PathBuf,
    pub database: String,
    pub work_dir: PathBuf,
}

impl SaveData {
    /// Dumps the database and the notes of loaded dumps, gzipped, into the artifact store; the
    /// stored archive's SHA-256.
    pub async fn run(self) -> Result<String, String> {
        run_sql(&self.socket, NOTES_TABLE).await?;
        let dir = self.work_dir.join("saved");
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let sql = dir.join("database.sql");
        let dump = daemon::find(&["mariadb-dump", "mysqldump"], "mariadb-client")?;
        let out =
            std::fs::File::create(&sql).map_err(|e| format!("write {}: {e}", sql.display()))?;
        let ran = tokio::process::Command::new(dump)
            .arg(format!("--socket={}", self.socket.display()))
            .args([
                "--user",
                "root",
                "--single-transaction",
                // No `LOCK TABLES` around each table's rows: in Galera, a load holding one
                // deadlocks with any DDL another member orders before its rows.
                "--skip-add-locks",
                "--routines",
                "--triggers",
            ])
            .args(["--events", "--databases", &self.database, "conpaas-agent"])
            .stdout(out)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("run mariadb-dump: {e}"))?
            .wait_with_output()
            .await
            .map_err(|e| format!("run mariadb-dump: {e}"))?;
        if !ran.status.success() {
            return Err(format!(
                "mariadb-dump failed: {}",
                String::from_utf8_lossy(&ran.stderr).trim()
            ));
        }
        // A dump always names its databases: an empty file is a dump that went elsewhere.
        if std::fs::metadata(&sql).map_or(0, |m| m.len()) == 0 {
            return Err(format!("mariadb-dump wrote nothing into {}", sql.display()));
        }
        let gz = dir.join("database.sql.gz");
        let (from, to) = (sql.clone(), gz.clone());
        tokio::task::spawn_blocking(move || gzip(&from, &to))
            .await
            .map_err(|e| format!("gzip broke off: {e}"))??;
        let _ = std::fs::remove_file(&sql);
        let stored = code::upload(&self.client, &self.namespace, &self.service, &gz).await;
        let _ = std::fs::remove_file(&gz);
        stored.map_err(|e| format!("{e:#}"))
    }
}

fn gzip(from: &Path, to: &Path) -> Result<(), String> {
    let mut input =
        std::fs::File::open(from).map_err(|e| format!("read {}: {e}", from.display()))?;
    let output = std::fs::File::create(to).map_err(|e| format!("write {}: {e}", to.display()))?;
    let mut encoder = flate2::write::GzEncoder::new(output, flate2::Compression::fast());
    std::io::copy(&mut input, &mut encoder)
        .and_then(|_| encoder.finish().map(|_| ()))
        .map_err(|e| format!("gzip into {}: {e}", to.display()))
}

/// Runs SQL as the node's root (unix-socket authentication); its output.
pub async fn run_sql(socket: &Path, statement: &str) -> Result<String, String> {
    let client = daemon::find(&["mariadb", "mysql"], "mariadb-client")?;
    let out = tokio::process::Command::new(client)
        .arg(format!("--socket={}", socket.display()))
        .args(["-uroot", "--batch", "--skip-column-names", "-e", statement])
        .output()
        .await
        .map_err(|e| format!("run the mariadb client: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Text safe inside a single-quoted SQL string.
pub fn quote(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\'', "\\'")
}

/// The file holding a dump's SQL: the download itself, or its gunzipped copy beside it (at most
/// `cap` bytes: a small archive that unpacks to a full disk is refused).
fn sql_file(download: &Path, cap: u64) -> Result<PathBuf, String> {
    use std::io::Read;
    let mut magic = [0u8; 2];
    let mut file =
        std::fs::File::open(download).map_err(|e| format!("read {}: {e}", download.display()))?;
    let gzipped = file.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b];
    if !gzipped {
        return Ok(download.to_path_buf());
    }
    let file =
        std::fs::File::open(download).map_err(|e| format!("read {}: {e}", download.display()))?;
    let target = download.with_extension("gunzipped.sql");
    let mut out =
        std::fs::File::create(&target).map_err(|e| format!("write {}: {e}", target.display()))?;
    let mut decoder = flate2::read::GzDecoder::new(file).take(cap.saturating_add(1));
    let written = std::io::copy(&mut decoder, &mut out).map_err(|e| {
        let _ = std::fs::remove_file(&target);
        format!("gunzip: {e}")
    })?;
    if written > cap {
        let _ = std::fs::remove_file(&target);
        return Err(format!("gunzips to more than {cap} bytes"));
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dump_is_read_plain_or_gzipped() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain.sql");
        std::fs::write(&plain, "SELECT 1;\n").unwrap();
        assert_eq!(sql_file(&plain, MAX_SQL_BYTES).unwrap(), plain);
        let gzipped = dir.path().join("dump.sql");
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(b"SELECT 2;\n").unwrap();
        std::fs::write(&gzipped, encoder.finish().unwrap()).unwrap();
        let sql = sql_file(&gzipped, MAX_SQL_BYTES).unwrap();
        assert_eq!(std::fs::read(sql).unwrap(), b"SELECT 2;\n");
        let broken = dir.path().join("broken.sql");
        std::fs::write(&broken, [0x1f, 0x8b, 0, 1, 2]).unwrap();
        assert!(
            sql_file(&broken, MAX_SQL_BYTES)
                .unwrap_err()
                .contains("gunzip")
        );
    }
}
