//! What a proxy measures for the autoscaler: the response times of the requests it served
//! (nginx logs `$request_time` of each into `logs/requests.log`), as the 95th percentile and
//! the rate over the last [`WINDOW`]. The aggregates are recomputed every [`PUBLISH_EVERY`] and
//! kept to two significant digits, so the node's status is written only when they move, never
//! per request or per sample.

use std::collections::{BTreeMap, VecDeque};
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The span the aggregates cover.
pub const WINDOW: Duration = Duration::from_secs(15);
/// How often they are recomputed.
pub const PUBLISH_EVERY: Duration = Duration::from_secs(5);
/// The log is emptied when it grows past this (nginx appends, so it goes on at the new end).
const MAX_LOG_BYTES: u64 = 16 << 20;

pub struct Latency {
    log: PathBuf,
    offset: u64,
    /// A line cut by the end of the file, completed by the next read.
    partial: String,
    samples: VecDeque<(Instant, u32)>,
    published: BTreeMap<String, i64>,
    last_publish: Option<Instant>,
}

impl Latency {
    pub fn new(log: PathBuf) -> Self {
        // Requests logged before this agent started are not this window's.
        let offset = std::fs::metadata(&log).map_or(0, |m| m.len());
        Self {
            log,
            offset,
            partial: String::new(),
            samples: VecDeque::new(),
            published: BTreeMap::new(),
            last_publish: None,
        }
    }

    /// Reads the requests logged since the last call, and recomputes the aggregates when due.
    pub fn poll(&mut self) {
        let now = Instant::now();
        for ms in self.read_new() {
            self.samples.push_back((now, ms));
        }
        while self
            .samples
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > WINDOW)
        {
            self.samples.pop_front();
        }
        if self
            .last_publish
            .is_none_or(|t| now.duration_since(t) >= PUBLISH_EVERY)
        {
            self.last_publish = Some(now);
            let times: Vec<u32> = self.samples.iter().map(|(_, ms)| *ms).collect();
            self.published = aggregates(&times, WINDOW);
        }
    }

    /// The aggregates last computed.
    pub fn metrics(&self) -> BTreeMap<String, i64> {
        self.published.clone()
    }

    /// Response times (ms) of the lines appended since the last read.
    fn read_new(&mut self) -> Vec<u32> {
        let Ok(mut file) = std::fs::File::open(&self.log) else {
            return Vec::new();
        };
        let len = file.metadata().map_or(0, |m| m.len());
        if len < self.offset {
            // Emptied: start over.
            self.offset = 0;
            self.partial.clear();
        }
        let mut text = String::new();
        if file.seek(SeekFrom::Start(self.offset)).is_err()
            || file.read_to_string(&mut text).is_err()
        {
            return Vec::new();
        }
        self.offset += text.len() as u64;
        if self.offset > MAX_LOG_BYTES && std::fs::File::create(&self.log).is_ok() {
            self.offset = 0;
        }
        let text = std::mem::take(&mut self.partial) + &text;
        let (complete, rest) = match text.rfind('\n') {
            Some(i) => (&text[..=i], &text[i + 1..]),
            None => ("", text.as_str()),
        };
        self.partial = rest.to_string();
        complete.lines().filter_map(parse_line).collect()
    }
}

/// One log line, `$request_time` in seconds with millisecond resolution, as milliseconds.
fn parse_line(line: &str) -> Option<u32> {
    let seconds: f64 = line.trim().parse().ok()?;
    Some((seconds * 1000.0).round() as u32)
}

/// `p95Ms` and `requestsPerSecond` over `window`, to two significant digits (0 without requests).
pub fn aggregates(times: &[u32], window: Duration) -> BTreeMap<String, i64> {
    let mut sorted = times.to_vec();
    sorted.sort_unstable();
    let p95 = match sorted.len() {
        0 => 0,
        n => sorted[(n * 95).div_ceil(100) - 1],
    };
    let rate = times.len() as f64 / window.as_secs_f64();
    BTreeMap::from([
        ("p95Ms".to_string(), two_digits(p95 as f64)),
        ("requestsPerSecond".to_string(), two_digits(rate)),
    ])
}

/// `x` rounded to two significant digits: 1234 -> 1200, 57 -> 57, 0.4 -> 0.
fn two_digits(x: f64) -> i64 {
    if x < 1.0 {
        return x.round() as i64;
    }
    let scale = 10f64.powi((x.log10().floor() as i32 - 1).max(0));
    ((x / scale).round() * scale) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_95th_percentile_and_the_rate_are_kept_to_two_digits() {
        let times: Vec<u32> = (1..=100).collect();
        let m = aggregates(&times, Duration::from_secs(10));
        assert_eq!(m["p95Ms"], 95);
        assert_eq!(m["requestsPerSecond"], 10);
        let slow: Vec<u32> = (0..40).map(|i| 1000 + i * 10).collect();
        assert_eq!(
            aggregates(&slow, WINDOW)["p95Ms"],
            1400,
            "1380 to two digits"
        );
        assert_eq!(aggregates(&[], WINDOW)["p95Ms"], 0);
    }

    #[test]
    fn new_lines_are_read_once_including_one_cut_by_the_end_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("requests.log");
        std::fs::write(&log, "9.000\n").unwrap();
        let mut latency = Latency::new(log.clone());
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        write!(file, "0.050\n0.2").unwrap();
        assert_eq!(latency.read_new(), vec![50], "the old line is skipped");
        writeln!(file, "00").unwrap();
        assert_eq!(latency.read_new(), vec![200]);
        std::fs::write(&log, "0.001\n").unwrap();
        assert_eq!(
            latency.read_new(),
            vec![1],
            "an emptied log is read from its start"
        );
    }
}
