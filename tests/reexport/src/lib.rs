//! A crate that re-exports async-contextlib under its own path, as
//! frameworks do.

/// async-contextlib, re-exported.
pub mod contextlib {
    pub use acl::*;
}
