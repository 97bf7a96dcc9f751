//! The client's record of its watches: which are set (to re-register them after a move),
//! the newest zxid the node has told it about (where a re-registration starts), and the
//! channel the application reads events from.
//!
//! Owns that record only; the connection's reader updates it frame by frame, in the order
//! the node sent them, so an event always reaches the application before the reply of any
//! request sent after the change that fired it, and a one-shot watch is forgotten the moment
//! its event is read. Never sends anything.

use std::collections::BTreeSet;

use crate::types::Zxid;
use crate::watch::{EventType, WatchEvent, WatchKind};

pub(super) struct Watches {
    set: BTreeSet<(WatchKind, String)>,
    last_zxid: Zxid,
    sink: flume::Sender<WatchEvent>,
}

impl Watches {
    pub fn new(sink: flume::Sender<WatchEvent>) -> Watches {
        Watches {
            set: BTreeSet::new(),
            last_zxid: Zxid::ZERO,
            sink,
        }
    }

    /// Every frame carries the node's commit point: all events up to it have been read.
    pub fn saw(&mut self, zxid: Zxid) {
        self.last_zxid = self.last_zxid.max(zxid);
    }

    pub fn last_zxid(&self) -> Zxid {
        self.last_zxid
    }

    pub fn set(&mut self, kind: WatchKind, path: String) {
        self.set.insert((kind, path));
    }

    pub fn unset(&mut self, kind: WatchKind, path: &str) {
        self.set.remove(&(kind, path.to_string()));
    }

    pub fn registered(&self) -> Vec<(WatchKind, String)> {
        self.set.iter().cloned().collect()
    }

    /// An event arrived: forget the one-shot watches it consumed, then hand it on.
    pub fn fired(&mut self, event: WatchEvent) {
        let consumed: &[WatchKind] = match event.kind {
            EventType::NodeCreated => &[WatchKind::Exist],
            EventType::NodeDeleted => &[WatchKind::Data, WatchKind::Children],
            EventType::NodeDataChanged => &[WatchKind::Data],
            EventType::NodeChildrenChanged => &[WatchKind::Children],
        };
        for kind in consumed {
            self.set.remove(&(*kind, event.path.clone()));
        }
        self.saw(event.zxid);
        // The application may have stopped listening; the record above still holds.
        let _ = self.sink.send(event);
    }
}
