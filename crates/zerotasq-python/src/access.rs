//! What a Python pool streams through: its own broker ([`RawPool`], with local and remote
//! workers) or a broker elsewhere ([`RemoteBroker`], e.g. a `zerotasq broker`). Open
//! iterators hold it weakly, so closing the pool really stops it.

use std::sync::{Arc, Weak};

use zerotasq::Link;
use zerotasq::{BrokerAccess, RawPool, RemoteBroker};

#[derive(Clone)]
pub enum Access {
    Local(Arc<RawPool>),
    Remote(Arc<RemoteBroker>),
}

/// An [`Access`] that does not keep the pool alive.
pub enum WeakAccess {
    Local(Weak<RawPool>),
    Remote(Weak<RemoteBroker>),
}

impl Access {
    pub fn downgrade(&self) -> WeakAccess {
        match self {
            Access::Local(pool) => WeakAccess::Local(Arc::downgrade(pool)),
            Access::Remote(broker) => WeakAccess::Remote(Arc::downgrade(broker)),
        }
    }
}

impl WeakAccess {
    pub fn upgrade(&self) -> Option<Access> {
        match self {
            WeakAccess::Local(pool) => pool.upgrade().map(Access::Local),
            WeakAccess::Remote(broker) => broker.upgrade().map(Access::Remote),
        }
    }
}

impl BrokerAccess for Access {
    fn link(&self) -> &Link {
        match self {
            Access::Local(pool) => pool.link(),
            Access::Remote(broker) => broker.link(),
        }
    }
}
