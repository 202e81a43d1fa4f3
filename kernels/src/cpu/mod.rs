//! CPU implementations of the loss kernels (the CPU side of the backend seam).

pub(crate) mod ctc;
pub(crate) mod elem;
pub(crate) mod lattice;
pub(crate) mod rnnt;

pub(crate) use elem::Elem;
