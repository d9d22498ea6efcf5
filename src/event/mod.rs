//! Framing a line into events and classifying each event's kind.
//!
//! A line is parsed once, by a borrowed visitor that reads only the fields
//! classification needs and skips (but still validates) the rest. The bytes
//! of an event are slices of the line as read: nothing is re-serialised.

mod framing;
mod kind;
mod select;
mod visit;

pub use framing::{classify, frame_line, wrap_invalid, FrameSink, Invalid};
pub use kind::{Class, Kind, Risk};
pub use select::Selection;
