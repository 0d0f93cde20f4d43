//! OpenNebula's error codes and the client's errors.

/// The error codes OpenNebula's XML-RPC API documents (the third element of a failed reply).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 0x0100: the session string was not accepted.
    Authentication,
    /// 0x0200: the user may not do this.
    Authorization,
    /// 0x0400: the object does not exist.
    NoExists,
    /// 0x0800: the action is not allowed in the object's state.
    Action,
    /// 0x1000: wrong parameters.
    XmlRpcApi,
    /// 0x2000: an internal error of OpenNebula.
    Internal,
    /// 0x4000: the object could not be allocated (quota, capacity).
    Allocate,
    /// 0x8000: the object is locked.
    Locked,
    /// A code the documentation does not list.
    Other(i32),
}

impl ErrorCode {
    /// The code from its number.
    pub fn from_code(code: i32) -> Self {
        match code {
            0x0100 => Self::Authentication,
            0x0200 => Self::Authorization,
            0x0400 => Self::NoExists,
            0x0800 => Self::Action,
            0x1000 => Self::XmlRpcApi,
            0x2000 => Self::Internal,
            0x4000 => Self::Allocate,
            0x8000 => Self::Locked,
            other => Self::Other(other),
        }
    }
}

/// What can go wrong with a call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// OpenNebula answered and refused.
    #[error("{method}: {code:?}: {message}")]
    Api {
        /// The method called.
        method: String,
        /// The documented error code.
        code: ErrorCode,
        /// OpenNebula's message.
        message: String,
    },
    /// The HTTP exchange failed (connection, timeout, a non-2xx status).
    #[error("{method}: transport: {message}")]
    Transport {
        /// The method called.
        method: String,
        /// What failed.
        message: String,
        /// The HTTP status, when there was one.
        status: Option<u16>,
    },
    /// The reply was not what OpenNebula sends (bad XML-RPC, a fault, a wrong shape, a VM
    /// document that does not parse).
    #[error("{method}: malformed reply: {message}")]
    Malformed {
        /// The method called.
        method: String,
        /// What was wrong.
        message: String,
    },
}

impl Error {
    /// The OpenNebula error code, for [`Error::Api`].
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Api { code, .. } => Some(*code),
            _ => None,
        }
    }
}
