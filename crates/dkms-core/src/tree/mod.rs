//! The DKMS tree (`/var/lib/dkms`) and the install tree's DKMS parts: `layout` names
//! every path in them (the only module that does), `scan` lists what is there.

pub mod layout;
mod scan;

pub use layout::{KernelArch, KernelEntry, Target};
pub use scan::*;
