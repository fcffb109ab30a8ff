//! LogStream operator.
