#![doc = include_str!("../README.md")]

pub use multisession_macros::MultiSession;
pub use multisession_runtime::*;
