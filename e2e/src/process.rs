//! Reading facts about processes the benchmarks measure.

use anyhow::Context as _;

/// Resident set size of process `pid`, in MiB.
pub fn rss_mib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .context("VmRSS")?
        .parse()?;
    Ok(kib / 1024.0)
}

/// A free loopback port for a server a test starts, chosen at random below the kernel's
/// ephemeral range (32768-60999 here): a port the kernel hands out (port 0) can be taken by any
/// outgoing connection, or by another test process, between the check and the server's bind,
/// which made control planes started side by side fail at random.
pub fn free_port() -> std::io::Result<u16> {
    use std::hash::{BuildHasher, Hasher};
    for _ in 0..1000 {
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let port = 20_000 + (random % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(std::io::Error::other(
        "no free port between 20000 and 32000",
    ))
}
