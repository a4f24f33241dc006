//! Our FUSE overlay filesystem (fuser) comes here; until then the `overlay` (kernel) and `vfs` storage drivers in `crate::runtime` provide the rootfs.
