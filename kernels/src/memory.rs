//! Memory placement hints for weight buffers.

/// Asks Linux to back the `bytes` bytes at `ptr` with transparent huge pages (2 MiB). A decode
/// step streams every weight once, so with 4 KiB pages it takes a TLB miss every 4 KiB;
/// huge pages make that one per 2 MiB. Call it on a fresh allocation before writing to it
/// (pages are chosen when first touched). Best effort: ignored on other systems, when THP is
/// off, or for buffers smaller than a huge page.
pub fn advise_huge_pages(ptr: *const u8, bytes: usize) {
    #[cfg(target_os = "linux")]
    {
        const PAGE: usize = 4096;
        const HUGE: usize = 2 << 20;
        if bytes < HUGE {
            return;
        }
        let start = (ptr as usize).next_multiple_of(PAGE);
        let end = (ptr as usize + bytes) / PAGE * PAGE;
        if end > start {
            // SAFETY: madvise only reads the address range, which lies inside the caller's
            // allocation; MADV_HUGEPAGE changes no contents and cannot fail destructively.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (ptr, bytes);
}
