//! Read and write halves of one glommio socket, for the connection's reader and writer tasks.
//!
//! glommio's `TcpStream` waits for readiness separately for receiving and sending (one source
//! each) and never holds buffered data inside a pending read, so one task may wait to read
//! while another writes. The halves share the stream through `Rc<RefCell<_>>`, borrowed only
//! for the duration of one poll, never across an await (so the borrow cannot conflict).
//!
//! Never: is sent to another thread (`Rc`); is used with more than one reader or writer task.

use std::cell::RefCell;
use std::io;
use std::os::unix::io::AsRawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite, future};
use glommio::net::TcpStream;

use super::pieces::{Unsent, send_until_full, send_vectored};

pub struct ReadHalf(Rc<RefCell<TcpStream>>);
pub struct WriteHalf(Rc<RefCell<TcpStream>>);

pub fn split(stream: TcpStream) -> (ReadHalf, WriteHalf) {
    let shared = Rc::new(RefCell::new(stream));
    (ReadHalf(shared.clone()), WriteHalf(shared))
}

impl AsyncRead for ReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_read(cx, buf)
    }
}

impl WriteHalf {
    /// Writes all of `pieces`, in order, with one `sendmsg` per time the socket has room
    /// (`super::pieces`); when it is full, waits for it through glommio's own write, which
    /// sends the first unsent piece once the socket has room again.
    pub async fn write_all_vectored(&mut self, pieces: &[&[u8]]) -> io::Result<()> {
        let fd = self.0.borrow().as_raw_fd();
        let mut unsent = Unsent::new(pieces);
        while !send_until_full(&mut unsent, |iov| send_vectored(fd, iov))? {
            let first = unsent.first();
            let sent =
                future::poll_fn(|cx| Pin::new(&mut *self.0.borrow_mut()).poll_write(cx, first))
                    .await?;
            if sent == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            unsent.advance(sent);
        }
        Ok(())
    }
}

impl AsyncWrite for WriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_close(cx)
    }
}
