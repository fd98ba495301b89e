//! The skill ABI, and its pure bounds checks.
//!
//! A skill module exports:
//! - `memory`: its linear memory;
//! - `alloc(len: i32) -> i32`: returns a pointer to `len` writable bytes;
//! - one or more entry points `name(ptr: i32, len: i32) -> i64`.
//!
//! To invoke an entry point the runner calls `alloc(input.len())`, copies the
//! input there, and calls the entry point with `(ptr, len)`. The entry point
//! returns either a non-negative i64 packing the output as
//! `(ptr << 32) | len` (`len` unsigned 32-bit, `ptr` below 2^31, which any
//! pointer into a memory of at most 256 MiB is), or a negative code of the
//! skill's own, reported as [`crate::SkillError::SkillFailed`].
//!
//! The only import allowed is
//! `mxp.call_tool(name_ptr: i32, name_len: i32, args_ptr: i32, args_len: i32) -> i64`.
//! The tool name must be UTF-8. On success the runner copies the result into
//! the skill through `alloc` and returns it packed as above; otherwise it
//! returns [`CODE_DENIED`] or [`CODE_FAILED`]. A tool missing from the
//! manifest, an exhausted host-call budget or an out-of-bounds pointer stops
//! the skill with a named error instead (the host is not called).
//!
//! Every pointer and length is checked against the memory's current size;
//! outputs are capped by the manifest's `max_output_bytes`.

/// `mxp.call_tool`: the gate denied the call.
pub const CODE_DENIED: i64 = -1;
/// `mxp.call_tool`: the tool ran and failed.
pub const CODE_FAILED: i64 = -2;

/// The import module name of host functions.
pub const HOST_MODULE: &str = "mxp";
/// The host function that calls a tool.
pub const CALL_TOOL: &str = "call_tool";
/// The memory export.
pub const MEMORY: &str = "memory";
/// The allocator export.
pub const ALLOC: &str = "alloc";

/// Pack a pointer and length as an entry point or `call_tool` returns them.
#[must_use]
pub fn pack(ptr: u32, len: u32) -> i64 {
    (i64::from(ptr) << 32) | i64::from(len)
}

/// Unpack a non-negative packed value into `(ptr, len)`; `None` if negative.
#[must_use]
pub fn unpack(value: i64) -> Option<(u32, u32)> {
    if value < 0 {
        return None;
    }
    let ptr = u32::try_from(value >> 32).ok()?;
    let len = u32::try_from(value & 0xFFFF_FFFF).ok()?;
    Some((ptr, len))
}

/// The byte range `ptr..ptr+len` if it lies within a memory of `memory_len` bytes.
#[must_use]
pub fn range(ptr: u32, len: u32, memory_len: usize) -> Option<std::ops::Range<usize>> {
    let start = usize::try_from(ptr).ok()?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    (end <= memory_len).then_some(start..end)
}

/// A guest's i32 pointer or length read as the unsigned value it means.
#[must_use]
pub fn as_u32(value: i32) -> u32 {
    u32::from_ne_bytes(value.to_ne_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_round_trips_the_full_u32_range() {
        for (p, l) in [(0, 0), (1, 2), (0x7FFF_FFFF, u32::MAX), (0x0FFF_0000, 7)] {
            assert_eq!(unpack(pack(p, l)), Some((p, l)));
        }
        assert_eq!(unpack(-1), None);
        // A pointer at or above 2 GiB packs negative: not an output (memory is at most 256 MiB).
        assert_eq!(unpack(pack(0x8000_0000, 7)), None);
    }

    #[test]
    fn range_refuses_anything_past_the_end_or_overflowing() {
        assert_eq!(range(0, 10, 10), Some(0..10));
        assert_eq!(range(10, 0, 10), Some(10..10));
        assert_eq!(range(5, 6, 10), None);
        assert_eq!(range(11, 0, 10), None);
        assert_eq!(range(u32::MAX, 1, 65536), None);
    }

    #[test]
    fn negative_i32_is_read_as_a_large_unsigned_pointer() {
        assert_eq!(as_u32(-1), u32::MAX);
    }
}
