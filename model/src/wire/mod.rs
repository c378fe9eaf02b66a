//! The peer wire protocol: length-prefixed frames carrying serde messages, written once
//! over the network port's byte streams (the protocol here is independent of the engine
//! that sends it).

pub mod frame;
pub mod message;

pub use frame::{read_frame, write_frame, FrameError, MAX_FRAME};
pub use message::{AncestryQuery, ProbeResult, Request, Response};
