//! A one-line progress display on a terminal (stderr): files, bytes, rate
//! and, once the total is known, an ETA. Nothing is shown when stderr is not
//! a terminal or with --quiet/--json.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::util::human_bytes;

/// A running display; stops when dropped.
pub struct Display {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

/// True when a display should be shown.
pub fn wanted(quiet: bool, json: bool) -> bool {
    !quiet && !json && std::io::stderr().is_terminal()
}

impl Display {
    /// Starts a display; `read` returns (files, bytes, total files, total
    /// bytes, whether the totals are final).
    pub fn start(enabled: bool, read: impl Fn() -> (u64, u64, u64, u64, bool) + Send + 'static) -> Display {
        let stop = Arc::new(AtomicBool::new(false));
        if !enabled {
            return Display { stop, handle: None };
        }
        let s = stop.clone();
        let started = Instant::now();
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(250));
                let (files, bytes, tfiles, tbytes, known) = read();
                let secs = started.elapsed().as_secs_f64().max(0.001);
                let rate = bytes as f64 / secs;
                let mut line =
                    format!("[{:>5.0}s] {files} files, {} ({}/s)", secs, human_bytes(bytes), human_bytes(rate as u64));
                if known && tbytes > 0 {
                    let pct = (bytes as f64 / tbytes as f64 * 100.0).min(100.0);
                    let eta = if rate > 0.0 { (tbytes.saturating_sub(bytes)) as f64 / rate } else { 0.0 };
                    line.push_str(&format!(" of {tfiles} files, {} — {pct:.0}%, ETA {:.0}s", human_bytes(tbytes), eta));
                }
                let mut err = std::io::stderr().lock();
                let _ = write!(err, "\r\x1b[2K{line}");
                let _ = err.flush();
            }
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        });
        Display { stop, handle: Some(handle) }
    }
}

impl Drop for Display {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
