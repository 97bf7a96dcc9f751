//! What a framed response is written from, and the vectored write of it: a response is a list
//! of pieces, each either shared bytes (`Bytes`: encoded headers, a record set copied on
//! another shard) or a chunk of this shard's storage engine (a batch-cache range or a DMA read
//! buffer, `storage::ReadChunk`) that is sent from where it lies. All pieces of a response go
//! to the socket in one `sendmsg` (or as few as the socket accepts).
//!
//! Why our own `sendmsg`: glommio 0.9's sockets have no vectored write (its `poll_write` sends
//! one buffer with `MSG_DONTWAIT`), so writing N pieces would cost N syscalls. The socket
//! stays glommio's: we only call `sendmsg` with `MSG_DONTWAIT` on its descriptor, and when the
//! socket is full we wait for it through glommio's own `poll_write` (which registers for
//! readiness with the reactor), exactly as its single-buffer writes do.
//!
//! Never: copies a piece; blocks the reactor (every send is non-blocking); is sent to another
//! thread (a local piece holds shard-local `Rc`s); makes a syscall per record or per piece.

use std::io::{self, IoSlice};
use std::ops::Deref;
use std::os::unix::io::RawFd;

use bytes::Bytes;

/// One piece of a response, written as it is.
pub enum Piece {
    /// Bytes that may have come from anywhere (encoded fields, a remote owner's copy).
    Shared(Bytes),
    /// A chunk of this shard's storage (held until written, never copied); only its first
    /// `len` bytes are sent (a Fetch trim keeps a prefix of whole batches).
    Local {
        chunk: Box<dyn Deref<Target = [u8]>>,
        len: usize,
    },
}

impl Piece {
    /// A shard-local chunk, sent whole unless truncated.
    pub fn local(chunk: impl Deref<Target = [u8]> + 'static) -> Piece {
        let len = chunk.len();
        Piece::Local {
            chunk: Box::new(chunk),
            len,
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        match self {
            Piece::Shared(b) => b,
            Piece::Local { chunk, len } => &chunk[..*len],
        }
    }

    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps the first `keep` bytes (no effect when the piece is shorter).
    pub fn truncate(&mut self, keep: usize) {
        match self {
            Piece::Shared(b) => b.truncate(keep),
            Piece::Local { len, .. } => *len = (*len).min(keep),
        }
    }
}

/// Pieces handed to one `sendmsg` at most (Linux's IOV_MAX is 1024; a Fetch response has a
/// few pieces per partition, so this covers all but the widest responses in one call).
const MAX_IOV_PER_SEND: usize = 256;

/// The unsent part of a list of byte slices: the next slices to send, and how a send of some
/// bytes moves it on.
pub struct Unsent<'a> {
    pieces: &'a [&'a [u8]],
    /// Index of the first piece not fully sent, and how much of it was sent.
    next: usize,
    sent_of_next: usize,
}

impl<'a> Unsent<'a> {
    pub fn new(pieces: &'a [&'a [u8]]) -> Unsent<'a> {
        let mut u = Unsent {
            pieces,
            next: 0,
            sent_of_next: 0,
        };
        u.skip_empty();
        u
    }

    pub fn is_done(&self) -> bool {
        self.next >= self.pieces.len()
    }

    /// The first unsent bytes of the next piece (empty when done).
    pub fn first(&self) -> &'a [u8] {
        self.pieces
            .get(self.next)
            .map_or(&[][..], |p| &p[self.sent_of_next..])
    }

    /// Fills `iov` with the unsent bytes, in order; returns how many entries it filled.
    pub fn fill<'b>(&self, iov: &mut [IoSlice<'b>]) -> usize
    where
        'a: 'b,
    {
        let mut n = 0;
        if self.is_done() || iov.is_empty() {
            return 0;
        }
        iov[0] = IoSlice::new(self.first());
        n += 1;
        for p in &self.pieces[self.next + 1..] {
            if n == iov.len() {
                break;
            }
            if !p.is_empty() {
                iov[n] = IoSlice::new(p);
                n += 1;
            }
        }
        n
    }

    /// Marks `n` more bytes as sent.
    pub fn advance(&mut self, mut n: usize) {
        while n > 0 && !self.is_done() {
            let rest = self.pieces[self.next].len() - self.sent_of_next;
            if n < rest {
                self.sent_of_next += n;
                return;
            }
            n -= rest;
            self.next += 1;
            self.sent_of_next = 0;
        }
        self.skip_empty();
    }

    fn skip_empty(&mut self) {
        while self
            .pieces
            .get(self.next)
            .is_some_and(|p| p.len() == self.sent_of_next)
        {
            self.next += 1;
            self.sent_of_next = 0;
        }
    }
}

/// One non-blocking `sendmsg` of `iov` on `fd`: the bytes the socket took.
pub fn send_vectored(fd: RawFd, iov: &[IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: `msghdr` is plain data; zeroed is its empty value (no name, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // `IoSlice` is ABI compatible with `iovec` on Unix (std documents it); sendmsg only reads
    // through the pointer, and `iov` outlives the call.
    msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = iov.len() as _;
    // SAFETY: `msg` points at `iov.len()` valid iovecs for the duration of the call.
    let sent = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sent as usize)
}

/// Sends what `unsent` holds with as few `send` calls as the socket accepts (each call gets up
/// to `MAX_IOV_PER_SEND` pieces). Returns `Ok(true)` when all is sent, `Ok(false)` when the
/// socket is full (the caller waits for it, then calls again).
pub fn send_until_full(
    unsent: &mut Unsent<'_>,
    mut send: impl FnMut(&[IoSlice<'_>]) -> io::Result<usize>,
) -> io::Result<bool> {
    let mut iov = [IoSlice::new(&[]); MAX_IOV_PER_SEND];
    while !unsent.is_done() {
        let n = unsent.fill(&mut iov);
        match send(&iov[..n]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(sent) => unsent.advance(sent),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket that takes at most `take` bytes per call and is full every `full_every`-th
    /// call; records what it got and how many calls it saw.
    struct FakeSocket {
        got: Vec<u8>,
        calls: usize,
        take: usize,
        full_every: usize,
    }

    impl FakeSocket {
        fn send(&mut self, iov: &[IoSlice<'_>]) -> io::Result<usize> {
            self.calls += 1;
            if self.full_every > 0 && self.calls.is_multiple_of(self.full_every) {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut n = 0;
            for s in iov {
                let k = s.len().min(self.take - n);
                self.got.extend_from_slice(&s[..k]);
                n += k;
                if n == self.take {
                    break;
                }
            }
            Ok(n)
        }
    }

    fn pieces() -> Vec<Vec<u8>> {
        (0..40u8)
            .map(|i| (0..(i as usize * 37) % 300).map(|j| i ^ j as u8).collect())
            .collect()
    }

    #[test]
    fn partial_sends_write_exactly_the_concatenation() {
        let owned = pieces();
        let slices: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
        let expected: Vec<u8> = owned.concat();
        for take in [1, 7, 64, 1000, usize::MAX / 2] {
            for full_every in [0, 2, 3] {
                let mut sock = FakeSocket {
                    got: Vec::new(),
                    calls: 0,
                    take,
                    full_every,
                };
                let mut unsent = Unsent::new(&slices);
                let mut rounds = 0;
                while !send_until_full(&mut unsent, |iov| sock.send(iov)).unwrap() {
                    rounds += 1;
                    assert!(rounds < 100_000, "no progress");
                }
                assert_eq!(sock.got, expected, "take {take}, full every {full_every}");
            }
        }
    }

    #[test]
    fn a_socket_that_takes_everything_gets_one_call() {
        let owned = pieces();
        let slices: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
        let mut sock = FakeSocket {
            got: Vec::new(),
            calls: 0,
            take: usize::MAX / 2,
            full_every: 0,
        };
        let mut unsent = Unsent::new(&slices);
        assert!(send_until_full(&mut unsent, |iov| sock.send(iov)).unwrap());
        assert_eq!(sock.calls, 1, "40 pieces, one sendmsg");
        assert_eq!(sock.got, owned.concat());
    }

    #[test]
    fn nothing_to_send_sends_nothing() {
        let empty: [&[u8]; 3] = [&[], &[], &[]];
        let mut unsent = Unsent::new(&empty);
        assert!(unsent.is_done());
        assert!(send_until_full(&mut unsent, |_| panic!("no call expected")).unwrap());
    }

    #[test]
    fn a_real_socket_receives_the_concatenation() {
        use std::io::Read;
        use std::os::unix::io::AsRawFd;
        let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        let owned = pieces();
        let slices: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
        let mut unsent = Unsent::new(&slices);
        assert!(send_until_full(&mut unsent, |iov| send_vectored(a.as_raw_fd(), iov)).unwrap());
        drop(a);
        let mut got = Vec::new();
        b.read_to_end(&mut got).unwrap();
        assert_eq!(got, owned.concat());
    }

    #[test]
    fn a_truncated_local_piece_sends_its_prefix_without_copying() {
        let data = std::rc::Rc::new(vec![1u8, 2, 3, 4, 5]);
        struct Shared(std::rc::Rc<Vec<u8>>);
        impl Deref for Shared {
            type Target = [u8];
            fn deref(&self) -> &[u8] {
                &self.0
            }
        }
        let mut p = Piece::local(Shared(data.clone()));
        assert_eq!(p.as_slice().as_ptr(), data.as_ptr());
        p.truncate(3);
        assert_eq!(p.as_slice(), &[1, 2, 3]);
        p.truncate(10);
        assert_eq!(p.len(), 3);
    }
}
