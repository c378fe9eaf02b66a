//! The stormcell protocol.
