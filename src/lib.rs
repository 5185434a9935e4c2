#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[doc = include_str!("../docs/derive.md")]
pub use multisession_macros::MultiSession;
pub use multisession_runtime::*;

#[doc = include_str!("../docs/guide.md")]
pub mod guide {}

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
#[doc = include_str!("../docs/scaling.md")]
pub mod scaling {}
