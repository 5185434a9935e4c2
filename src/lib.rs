#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[doc = include_str!("../docs/derive.md")]
pub use multisession_macros::MultiSession;
pub use multisession_runtime::*;

#[doc = include_str!("../docs/guide.md")]
pub mod guide {}

#[cfg(all(feature = "redis", feature = "cache"))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "redis", feature = "cache"))))]
#[doc = include_str!("../docs/scaling.md")]
pub mod scaling {}
