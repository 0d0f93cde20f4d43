//! Talking to the nodes: single commands through the `redis` crate (blocking, so the callers run
//! them on tokio's blocking threads), cluster changes through `redis-cli --cluster`, whose slot
//! moving is Redis' own.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use redis::{ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};

use super::cluster::{self, View};
use conpaas_crds::types::kvstore::PORT;

const TIMEOUT: Duration = Duration::from_secs(3);
/// The key noting which saved dump the cluster was loaded with (left out of dumps).
const RESTORED_KEY: &str = "conpaas:restored";
/// The longest the masters' writes are paused for a dump.
const PAUSE: Duration = Duration::from_secs(120);
/// The longest they stay paused after a dump for a stop (the save stored and the nodes gone,
/// normally within a minute; a stop called off right after its save leaves the writes paused
/// no longer than this).
const FENCE: Duration = Duration::from_secs(900);
/// What a saved dump starts with: the format's name and version.
const DUMP_MAGIC: &[u8] = b"conpaas-kvstore-dump 1\n";

/// How to reach the nodes.
#[derive(Clone)]
pub struct Nodes {
    pub password: String,
    pub redis_cli: PathBuf,
}

impl Nodes {
    fn info(&self, address: &str) -> redis::RedisResult<redis::ConnectionInfo> {
        Ok(ConnectionAddr::Tcp(address.to_string(), PORT)
            .into_connection_info()?
            .set_redis_settings(RedisConnectionInfo::default().set_password(&self.password)))
    }

    fn connect(&self, address: &str) -> Result<redis::Connection, String> {
        let what = |e: redis::RedisError| format!("connect to {address}:{PORT}: {e}");
        let client = redis::Client::open(self.info(address).map_err(what)?).map_err(what)?;
        let connection = client.get_connection_with_timeout(TIMEOUT).map_err(what)?;
        connection
            .set_read_timeout(Some(TIMEOUT))
            .and_then(|()| connection.set_write_timeout(Some(TIMEOUT)))
            .map_err(what)?;
        Ok(connection)
    }

    /// What the node at `address` knows of the cluster.
    pub fn view(&self, address: &str) -> Result<View, String> {
        let mut connection = self.connect(address)?;
        let what = |e: redis::RedisError| format!("ask {address}:{PORT} about the cluster: {e}");
        let nodes: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query(&mut connection)
            .map_err(what)?;
        let info: String = redis::cmd("CLUSTER")
            .arg("INFO")
            .query(&mut connection)
            .map_err(what)?;
        let replication: String = redis::cmd("INFO")
            .arg("replication")
            .query(&mut connection)
            .map_err(what)?;
        Ok(View {
            nodes: cluster::parse_nodes(&nodes),
            state_ok: cluster::state_ok(&info),
            in_sync: cluster::in_sync(&replication),
        })
    }

    /// `CLUSTER FORGET id` on the node at `address` (a node that failed for good).
    pub fn forget(&self, address: &str, id: &str) -> Result<(), String> {
        let mut connection = self.connect(address)?;
        redis::cmd("CLUSTER")
            .arg("FORGET")
            .arg(id)
            .query::<()>(&mut connection)
            .map_err(|e| format!("{address}: CLUSTER FORGET {id}: {e}"))
    }

    /// `CLUSTER FAILOVER` on the replica at `address`: it catches up with its master, then
    /// takes its slots over.
    pub fn failover(&self, address: &str) -> Result<(), String> {
        let mut connection = self.connect(address)?;
        redis::cmd("CLUSTER")
            .arg("FAILOVER")
            .query::<()>(&mut connection)
            .map_err(|e| format!("{address}: CLUSTER FAILOVER: {e}"))
    }

    /// `CLUSTER REPLICATE master_id` on the node at `address`.
    pub fn replicate(&self, address: &str, master_id: &str) -> Result<(), String> {
        let mut connection = self.connect(address)?;
        redis::cmd("CLUSTER")
            .arg("REPLICATE")
            .arg(master_id)
            .query::<()>(&mut connection)
            .map_err(|e| format!("{address}: CLUSTER REPLICATE {master_id}: {e}"))
    }

    /// `redis-cli --cluster <args>`; its output, or why it failed with the output's end.
    pub async fn cluster_command(&self, args: &[String]) -> Result<String, String> {
        let out = tokio::process::Command::new(&self.redis_cli)
            .env("REDISCLI_AUTH", &self.password)
            .arg("--cluster")
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .map_err(|e| format!("run {}: {e}", self.redis_cli.display()))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            return Ok(text);
        }
        let tail: Vec<&str> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .rev()
            .take(3)
            .collect();
        Err(format!(
            "redis-cli --cluster {}: {}",
            args.first().map_or("", String::as_str),
            tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
        ))
    }

    /// Every key of the masters at `masters` with its expiry, as a gzipped dump, written while
    /// the masters take no writes (`CLIENT PAUSE ... WRITE`: a write acknowledged after its
    /// master was read would be lost); the number of keys. The writes stay paused after a
    /// dump that succeeded, for up to [`FENCE`]: the dump is the Service's last state, and a
    /// write made after it would be acknowledged and then lost with the nodes. A save that
    /// then fails lifts the fence ([`Nodes::unpause`]) and dumps again later.
    pub fn dump(&self, masters: &[String], to: &std::path::Path) -> Result<u64, String> {
        let mut paused = Vec::new();
        for master in masters {
            let mut connection = self.connect(master)?;
            pause(&mut connection, PAUSE)
                .map_err(|e| format!("pause the writes on {master}: {e}"))?;
            paused.push(connection);
        }
        let dumped = self.dump_paused(masters, to);
        for mut connection in paused {
            let _ = match dumped {
                Ok(_) => pause(&mut connection, FENCE),
                Err(_) => unpause(&mut connection),
            };
        }
        dumped
    }

    /// Holds the fence a dump left on `masters` for [`FENCE`] from now (renewed while the
    /// save is uploaded, however long that takes).
    pub fn hold_fence(&self, masters: &[String]) {
        self.on_each(masters, "renew the pause of writes", |c| pause(c, FENCE));
    }

    /// Lifts the fence a dump left on `masters`.
    pub fn unpause(&self, masters: &[String]) {
        self.on_each(masters, "lift the pause of writes", unpause);
    }

    /// Runs `command` on each of `masters`, warning about those it failed on.
    fn on_each(
        &self,
        masters: &[String],
        what: &str,
        command: impl Fn(&mut redis::Connection) -> redis::RedisResult<()>,
    ) {
        for master in masters {
            let done = self
                .connect(master)
                .and_then(|mut c| command(&mut c).map_err(|e| e.to_string()));
            if let Err(e) = done {
                tracing::warn!(%master, error = %e, "{what}");
            }
        }
    }

    fn dump_paused(&self, masters: &[String], to: &std::path::Path) -> Result<u64, String> {
        let file = std::fs::File::create(to).map_err(|e| format!("write {}: {e}", to.display()))?;
        let mut out = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
        let write_error = |e: std::io::Error| format!("write {}: {e}", to.display());
        out.write_all(DUMP_MAGIC).map_err(write_error)?;
        let mut count = 0;
        for master in masters {
            let mut connection = self.connect(master)?;
            let what = |e: redis::RedisError| format!("dump the keys of {master}: {e}");
            let mut cursor: u64 = 0;
            loop {
                let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("COUNT")
                    .arg(1000)
                    .query(&mut connection)
                    .map_err(what)?;
                for key in keys.into_iter().filter(|k| k != RESTORED_KEY.as_bytes()) {
                    let (payload, ttl): (Option<Vec<u8>>, i64) = redis::pipe()
                        .cmd("DUMP")
                        .arg(&key)
                        .cmd("PTTL")
                        .arg(&key)
                        .query(&mut connection)
                        .map_err(what)?;
                    // Gone (expired, deleted) since the scan saw it.
                    let Some(payload) = payload else { continue };
                    write_record(&mut out, &key, ttl.max(0), &payload).map_err(write_error)?;
                    count += 1;
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        out.finish().map_err(write_error)?;
        Ok(count)
    }

    /// The saved dump (its SHA-256) the cluster reached through `seeds` was loaded with.
    pub fn restored(&self, seeds: &[String]) -> Result<Option<String>, String> {
        let mut connection = self.cluster(seeds)?;
        redis::cmd("GET")
            .arg(RESTORED_KEY)
            .query(&mut connection)
            .map_err(|e| format!("GET {RESTORED_KEY}: {e}"))
    }

    /// Loads a dump into the cluster reached through `seeds`, skipping keys that exist (a
    /// second restore overwrites nothing written since), then notes `sha256` in the cluster
    /// itself, so that no later manager loads it again; the keys loaded and skipped.
    pub fn restore(
        &self,
        seeds: &[String],
        from: &std::path::Path,
        sha256: &str,
    ) -> Result<(u64, u64), String> {
        let mut connection = self.cluster(seeds)?;
        let loaded = load_dump(&mut connection, from)?;
        redis::cmd("SET")
            .arg(RESTORED_KEY)
            .arg(sha256)
            .query::<()>(&mut connection)
            .map_err(|e| format!("SET {RESTORED_KEY}: {e}"))?;
        Ok(loaded)
    }

    fn cluster(&self, seeds: &[String]) -> Result<redis::cluster::ClusterConnection, String> {
        let infos = seeds
            .iter()
            .map(|s| self.info(s))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("seed nodes: {e}"))?;
        let client = redis::cluster::ClusterClient::builder(infos)
            .password(self.password.clone())
            .connection_timeout(TIMEOUT)
            .response_timeout(TIMEOUT)
            .build()
            .map_err(|e| format!("cluster client: {e}"))?;
        client
            .get_connection()
            .map_err(|e| format!("connect to the cluster: {e}"))
    }
}

/// Loads the dump `from` through `connection`; the keys loaded and skipped (they existed).
fn load_dump(
    connection: &mut redis::cluster::ClusterConnection,
    from: &std::path::Path,
) -> Result<(u64, u64), String> {
    let file = std::fs::File::open(from).map_err(|e| format!("read {}: {e}", from.display()))?;
    let mut input = std::io::BufReader::new(flate2::read::GzDecoder::new(file));
    let read_error = |e: std::io::Error| format!("read the saved dump: {e}");
    let mut magic = vec![0; DUMP_MAGIC.len()];
    input.read_exact(&mut magic).map_err(read_error)?;
    if magic != DUMP_MAGIC {
        return Err("the saved data is not a kvstore dump".into());
    }
    let (mut loaded, mut skipped) = (0, 0);
    while let Some((key, ttl, payload)) = read_record(&mut input).map_err(read_error)? {
        let restored: redis::RedisResult<()> = redis::cmd("RESTORE")
            .arg(&key)
            .arg(ttl)
            .arg(&payload)
            .query(connection);
        match restored {
            Ok(()) => loaded += 1,
            Err(e) if e.code() == Some("BUSYKEY") => skipped += 1,
            Err(e) => {
                return Err(format!(
                    "restore key {:?}: {e}",
                    String::from_utf8_lossy(&key)
                ));
            }
        }
    }
    Ok((loaded, skipped))
}

fn write_record(out: &mut impl Write, key: &[u8], ttl: i64, payload: &[u8]) -> std::io::Result<()> {
    out.write_all(&(key.len() as u32).to_be_bytes())?;
    out.write_all(key)?;
    out.write_all(&ttl.to_be_bytes())?;
    out.write_all(&(payload.len() as u32).to_be_bytes())?;
    out.write_all(payload)
}

type Record = (Vec<u8>, i64, Vec<u8>);

fn read_record(input: &mut impl Read) -> std::io::Result<Option<Record>> {
    let mut len = [0u8; 4];
    match input.read_exact(&mut len) {
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        other => other?,
    }
    let mut key = vec![0; u32::from_be_bytes(len) as usize];
    input.read_exact(&mut key)?;
    let mut ttl = [0u8; 8];
    input.read_exact(&mut ttl)?;
    input.read_exact(&mut len)?;
    let mut payload = vec![0; u32::from_be_bytes(len) as usize];
    input.read_exact(&mut payload)?;
    Ok(Some((key, i64::from_be_bytes(ttl), payload)))
}

/// Pauses the writes (reads go on) on a connection's node for `how_long`.
fn pause(connection: &mut redis::Connection, how_long: Duration) -> redis::RedisResult<()> {
    redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(how_long.as_millis() as u64)
        .arg("WRITE")
        .query(connection)
}

fn unpause(connection: &mut redis::Connection) -> redis::RedisResult<()> {
    redis::cmd("CLIENT").arg("UNPAUSE").query(connection)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_as_written() {
        let mut bytes = Vec::new();
        write_record(&mut bytes, b"user:1", 0, b"\x00\x05hello").unwrap();
        write_record(&mut bytes, b"", 1500, b"").unwrap();
        let mut input = bytes.as_slice();
        assert_eq!(
            read_record(&mut input).unwrap(),
            Some((b"user:1".to_vec(), 0, b"\x00\x05hello".to_vec()))
        );
        assert_eq!(
            read_record(&mut input).unwrap(),
            Some((Vec::new(), 1500, Vec::new()))
        );
        assert_eq!(read_record(&mut input).unwrap(), None);
    }
}
