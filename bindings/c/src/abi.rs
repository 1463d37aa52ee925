//! How the structs of the C ABI grow (the policy at the top of
//! `keyward.h`): every struct starts with `size_t size`, which the program
//! sets to `sizeof` the struct of the header it was built against, so the
//! library knows which layout it was given. Fields are only ever appended,
//! and a zero field means what the library did before the field existed.
//!
//! - A struct the program passes in is read for `min(size, ours)` bytes;
//!   the rest takes its zero default. Bytes past ours (a newer program's
//!   fields) must be zero, or the call fails rather than ignore a setting
//!   it was asked for.
//! - A struct the library fills is written for `min(size, ours)` bytes, so
//!   a newer program's extra fields are left as it set them and an older
//!   program's struct is never overrun.
//!
//! The same rule as Linux's extensible system-call structs (`openat2`,
//! `clone3`).

use std::mem::{MaybeUninit, size_of};

use super::error::{Fail, fail};
use super::generated::kw_status;

/// Reads a caller's struct of `T`'s family at `ptr`, whose first field is
/// its size. `min_size` is the size of the family's first published layout.
///
/// # Safety
/// `ptr` points to at least `size` readable bytes, `size` being its first field.
pub(crate) unsafe fn read_in<T: Copy>(
    ptr: *const T,
    min_size: usize,
    what: &str,
    invalid: kw_status,
) -> Result<T, Fail> {
    // SAFETY: every layout of the family starts with a size_t.
    let size = unsafe { ptr.cast::<usize>().read_unaligned() };
    if size < min_size {
        return Err(fail(
            invalid,
            format!("{what}.size is {size}: set it to sizeof({what}) (at least {min_size})"),
        ));
    }
    let ours = size_of::<T>();
    if size > ours {
        // SAFETY: the caller promises `size` readable bytes.
        let tail = unsafe { std::slice::from_raw_parts(ptr.cast::<u8>().add(ours), size - ours) };
        if tail.iter().any(|&b| b != 0) {
            return Err(fail(
                invalid,
                format!(
                    "{what} sets fields this keyward does not know (past byte {ours}); \
                     the program was built against a newer keyward.h"
                ),
            ));
        }
    }
    let mut value = MaybeUninit::<T>::zeroed();
    // SAFETY: copies min(size, ours) bytes into a zeroed T; all-zero is a
    // valid T for every struct of the ABI (numbers, bools, NULL pointers).
    unsafe {
        std::ptr::copy_nonoverlapping(
            ptr.cast::<u8>(),
            value.as_mut_ptr().cast::<u8>(),
            size.min(ours),
        );
        Ok(value.assume_init())
    }
}

/// Checks the size a caller gave for a struct the library will fill.
///
/// # Safety
/// `out` is not NULL and points to a struct whose first field is its size.
pub(crate) unsafe fn out_size<T>(
    out: *const T,
    min_size: usize,
    what: &str,
) -> Result<usize, Fail> {
    // SAFETY: every layout of the family starts with a size_t.
    let size = unsafe { out.cast::<usize>().read_unaligned() };
    if size < min_size {
        return Err(fail(
            kw_status::KW_STATUS_INVALID_INPUT,
            format!("{what}.size is {size}: set it to sizeof({what}) (at least {min_size})"),
        ));
    }
    Ok(size)
}

/// Writes `value` into the caller's struct for `min(size, ours)` bytes,
/// leaving its `size` field as the caller set it.
///
/// # Safety
/// `out` points to at least `size` writable bytes.
pub(crate) unsafe fn write_out<T>(out: *mut T, size: usize, value: &T) {
    let n = size.min(size_of::<T>());
    let skip = size_of::<usize>();
    // SAFETY: `n` bytes fit both the caller's struct and `value`; the
    // first `skip` bytes (the size) are the caller's and stay as they are.
    unsafe {
        std::ptr::copy_nonoverlapping(
            std::ptr::from_ref(value).cast::<u8>().add(skip),
            out.cast::<u8>().add(skip),
            n - skip,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two layouts of one family: the first, and one with a field appended.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq)]
    struct V1 {
        size: usize,
        a: u32,
    }

    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq)]
    struct V2 {
        size: usize,
        a: u32,
        b: u64,
    }

    const V1_SIZE: usize = size_of::<V1>();
    const INVALID: kw_status = kw_status::KW_STATUS_INVALID_OPTIONS;

    #[test]
    fn an_older_program_is_read_with_defaults_for_the_new_field() {
        let old = V1 {
            size: V1_SIZE,
            a: 7,
        };
        let read = unsafe { read_in(std::ptr::from_ref(&old).cast::<V2>(), V1_SIZE, "v", INVALID) };
        let read = read.ok().unwrap();
        assert_eq!((read.a, read.b), (7, 0));
    }

    #[test]
    fn a_newer_program_is_read_when_its_new_fields_are_zero_and_refused_otherwise() {
        let zero = V2 {
            size: size_of::<V2>(),
            a: 7,
            b: 0,
        };
        let read = unsafe {
            read_in(
                std::ptr::from_ref(&zero).cast::<V1>(),
                V1_SIZE,
                "v",
                INVALID,
            )
        };
        assert_eq!(read.ok().unwrap().a, 7);
        let set = V2 { b: 9, ..zero };
        let refused =
            unsafe { read_in(std::ptr::from_ref(&set).cast::<V1>(), V1_SIZE, "v", INVALID) };
        assert!(refused.is_err_and(|f| f.status == INVALID && f.message.contains("newer")));
        let short = V1 { size: 4, a: 7 };
        let refused = unsafe { read_in(&raw const short, V1_SIZE, "v", INVALID) };
        assert!(refused.is_err_and(|f| f.message.contains("sizeof(v)")));
    }

    #[test]
    fn an_older_programs_struct_is_never_overrun() {
        // The library's struct is V2; the program's is V1 followed by a canary.
        #[repr(C)]
        struct Guarded {
            v: V1,
            canary: u64,
        }
        let mut out = Guarded {
            v: V1 {
                size: V1_SIZE,
                a: 0,
            },
            canary: 0xdead_beef,
        };
        let ptr = std::ptr::from_mut(&mut out.v).cast::<V2>();
        let size = unsafe { out_size(ptr, V1_SIZE, "v") }.ok().unwrap();
        let library = V2 {
            size: 0,
            a: 5,
            b: 6,
        };
        unsafe { write_out(ptr, size, &library) };
        assert_eq!((out.v.size, out.v.a, out.canary), (V1_SIZE, 5, 0xdead_beef));
    }

    #[test]
    fn a_newer_programs_extra_field_is_left_alone() {
        let mut out = V2 {
            size: size_of::<V2>(),
            a: 0,
            b: 42,
        };
        let ptr = std::ptr::from_mut(&mut out).cast::<V1>();
        let size = unsafe { out_size(ptr, V1_SIZE, "v") }.ok().unwrap();
        unsafe { write_out(ptr, size, &V1 { size: 0, a: 5 }) };
        assert_eq!((out.a, out.b), (5, 42));
    }
}
