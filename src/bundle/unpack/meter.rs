//! A reader that bounds how much of the decompressed tar stream may be read.
//!
//! The `tar` crate reads GNU long names and PAX headers whole into memory
//! before it yields the entry they describe, so their size cannot be checked
//! first. The unpacker opens a window before each step instead: a small one
//! while the crate reads headers, exactly the declared size while an entry's
//! data is read. A read past the window, or past the cap on the whole stream,
//! fails and records why, so a bomb costs at most the limit.

use std::cell::Cell;
use std::io::{self, Read};
use std::rc::Rc;

/// Which bound a read ran into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trip {
    /// The current window (one header, or one entry's data).
    Window,
    /// The cap on the whole decompressed stream.
    Total,
}

/// The shared account of a [`Metered`] reader.
#[derive(Debug)]
pub struct Meter {
    cap: u64,
    read: Cell<u64>,
    window: Cell<u64>,
    tripped: Cell<Option<Trip>>,
}

impl Meter {
    pub fn new(cap: u64) -> Rc<Meter> {
        Rc::new(Meter {
            cap,
            read: Cell::new(0),
            window: Cell::new(0),
            tripped: Cell::new(None),
        })
    }

    /// Allows the next `bytes` bytes (still within the cap).
    pub fn open_window(&self, bytes: u64) {
        self.window.set(bytes);
    }

    /// Bytes read so far.
    pub fn read(&self) -> u64 {
        self.read.get()
    }

    pub fn cap(&self) -> u64 {
        self.cap
    }

    /// The bound that failed a read, if one did.
    pub fn tripped(&self) -> Option<Trip> {
        self.tripped.get()
    }
}

pub struct Metered<R> {
    inner: R,
    meter: Rc<Meter>,
}

impl<R> Metered<R> {
    pub fn new(inner: R, meter: Rc<Meter>) -> Self {
        Metered { inner, meter }
    }

    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let m = &self.meter;
        let window = m.window.get();
        let left = m.cap.saturating_sub(m.read.get());
        let allowed = window.min(left);
        if allowed == 0 {
            // At the bound: the end of the stream is fine, one more byte is not.
            let mut probe = [0u8; 1];
            if self.inner.read(&mut probe)? == 0 {
                return Ok(0);
            }
            let trip = if window == 0 {
                Trip::Window
            } else {
                Trip::Total
            };
            m.tripped.set(Some(trip));
            return Err(io::Error::other("read past the unpacker's limit"));
        }
        let len = usize::try_from(allowed).map_or(buf.len(), |a| a.min(buf.len()));
        let n = self.inner.read(&mut buf[..len])?;
        m.window.set(window - n as u64);
        m.read.set(m.read.get() + n as u64);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_at_the_window_and_the_cap() {
        let meter = Meter::new(10);
        let mut r = Metered::new(&[7u8; 20][..], meter.clone());
        let mut buf = [0u8; 8];
        meter.open_window(5);
        assert_eq!(r.read(&mut buf).unwrap(), 5);
        assert!(r.read(&mut buf).is_err());
        assert_eq!(meter.tripped(), Some(Trip::Window));
        meter.open_window(u64::MAX);
        assert_eq!(r.read(&mut buf).unwrap(), 5);
        assert!(r.read(&mut buf).is_err());
        assert_eq!(meter.tripped(), Some(Trip::Total));
    }

    #[test]
    fn the_end_of_the_stream_at_the_bound_is_not_a_trip() {
        let meter = Meter::new(4);
        let mut r = Metered::new(&[1u8; 4][..], meter.clone());
        meter.open_window(u64::MAX);
        let mut all = Vec::new();
        r.read_to_end(&mut all).unwrap();
        assert_eq!(all.len(), 4);
        assert_eq!(meter.tripped(), None);
    }
}
