//! Little-endian integers in on-disk structures (partition tables, boot
//! sectors, superblocks): the one place the disk layer reads them.
//!
//! `*_at` say `None` when the field runs past the end of the bytes, for
//! readers of hostile, possibly short buffers (the content probes). The
//! plain forms are for structures read whole at a fixed size, whose
//! fields are known to be inside; should one not be, it reads as zero
//! rather than panicking.

pub fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(field(b, at)?))
}

pub fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(field(b, at)?))
}

pub fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(field(b, at)?))
}

pub fn u16(b: &[u8], at: usize) -> u16 {
    u16_at(b, at).unwrap_or(0)
}

pub fn u32(b: &[u8], at: usize) -> u32 {
    u32_at(b, at).unwrap_or(0)
}

pub fn u64(b: &[u8], at: usize) -> u64 {
    u64_at(b, at).unwrap_or(0)
}

/// The `N` bytes at `at`, if all are inside `b`.
fn field<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    b.get(at..at.checked_add(N)?)?.try_into().ok()
}
