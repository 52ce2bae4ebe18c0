"""The waits of our Triton kernels: the GPU clock, the acquire fence, and the gate of a call
launched ahead (the first layer's GATE in kernels.conv_layer_kernel, or gate_kernel of its own).

With e2e_launch: ahead (inference.Predictor) each call also launches the next call's graph while
its own runs; that graph waits at its gate for its call.  The gate spins on the host's flag word in
pinned host memory until it holds the call's number, so the net's kernels start as soon as the
image is there and the launch is off the critical path.  e2e_gate: kernel puts the gate in a kernel
of its own (gate_kernel, one program, before the net's first kernel); e2e_gate: stem in the first
layer's kernel itself (conv_layer_kernel, GATE: its program 0 waits for the flag, the others for
program 0), one kernel boundary fewer.  On starting, the gate writes the call's number into answer
word 2: the predictor is ready for the call (what the benchmark waits for between calls).  The host
writes the flag after the image (x86 stores reach memory in program order), and the image is read
after the flag was seen.  A gate that waits longer than its limit expires: it writes the call's
number into answer word 1 (before the head writes word 0: that is a later kernel, and PCIe keeps a
device's writes in order), so the host knows that this graph answered on an old image, and takes
the graph queued behind it.
"""
try:  # Triton ships with torch on Linux; its absence is reported by kernel_net.available()
    import triton
    import triton.language as tl
except ImportError:
    triton, tl = None, None

SEQ_MASK = (1 << 27) - 1  # the call number kept in an answer word (27 bits above the 4-bit class)

if triton is not None:
    try:
        from triton.language.extra.cuda import gdc_launch_dependents
    except ImportError:  # old Triton: PDL stays off (kernel_net.pdl_available says why)
        gdc_launch_dependents = None
    SEQ_MASK_C = tl.constexpr(SEQ_MASK)  # a global a kernel reads must be a constexpr

    @triton.jit
    def _clock():
        # the GPU's global nanosecond clock (%globaltimer), the same on every SM
        return tl.inline_asm_elementwise("mov.u64 $0, %globaltimer;", "=l", [], dtype=tl.int64, is_pure=False,
                                         pack=1)

    @triton.jit
    def _fence_acquire(ASM: tl.constexpr):
        # after a relaxed (volatile) load saw the last arrival: the others' stores become visible
        # to this program's plain loads (a gpu-scope fence also drops this SM's stale L1 lines)
        if ASM:
            tl.inline_asm_elementwise("fence.acq_rel.gpu;\n\tmov.u32 $0, 0;", "=r", [], dtype=tl.int32,
                                      is_pure=False, pack=1)

    @triton.jit
    def _call_number(seq_ptr):
        # the number of the call a gate waits for: (device call counter + 1) & SEQ_MASK
        return (tl.load(seq_ptr) + 1) & SEQ_MASK_C

    @triton.jit
    def _wait_for(ptr, want, word_ptr, limit, CLOCK: tl.constexpr):
        # Spin on a word (volatile loads) until it holds want, at most limit (ns of the GPU's clock
        # with CLOCK, else reads: the interpreter has no clock).  On expiry write want into answer
        # word 1: the answer that follows is of an old image.
        f = tl.load(ptr, volatile=True)
        if CLOCK:
            t_end = _clock() + limit
            while (f != want) & (_clock() < t_end):
                f = tl.load(ptr, volatile=True)
        else:
            n = 0
            while (f != want) & (n < limit):
                f = tl.load(ptr, volatile=True)
                n += 1
        if f != want:
            tl.store(word_ptr + 1, want, cache_modifier=".wt")

    @triton.jit
    def _spin_until(gap, CLOCK: tl.constexpr):
        # spin gap ns of the GPU's clock (the interpreter has none: no wait)
        if CLOCK:
            t = _clock() + gap
            c = _clock()
            while c < t:
                c = _clock()

    @triton.jit
    def _wait_staggered(ptr, want, word_ptr, limit, GAP: tl.constexpr, CLOCK: tl.constexpr):
        # _wait_for with four reads of the word in flight, issued GAP ns apart: a read of host
        # memory takes a round trip over PCIe (~1 us), so one read after another samples the word
        # once a round trip and sees the host's write half a trip late on average; four staggered
        # reads sample it four times as often.  Each read is issued again once it came back and
        # missed, so the stagger holds; the wait ends at the first read that holds want.  Measured
        # on an H200 (F, in one process): the call ~13 us slower than with one read in flight, so
        # no shipped path uses it (e2e_polls: 1); it stays as the measured alternative.
        if CLOCK:
            t_end = _clock() + limit
        else:
            t_end = limit
        f0 = tl.load(ptr, volatile=True)
        _spin_until(GAP, CLOCK)
        f1 = tl.load(ptr, volatile=True)
        _spin_until(GAP, CLOCK)
        f2 = tl.load(ptr, volatile=True)
        _spin_until(GAP, CLOCK)
        f3 = tl.load(ptr, volatile=True)
        n = 0
        hit = f0 == want
        go = hit == 0
        while go:
            # each read is checked (waiting for it) and, if it missed, issued again, in turn: the
            # nested ifs stop at the first hit, so no read behind it is waited for
            f0 = tl.load(ptr, volatile=True)
            if f1 == want:
                hit = f1 == want
            else:
                f1 = tl.load(ptr, volatile=True)
                if f2 == want:
                    hit = f2 == want
                else:
                    f2 = tl.load(ptr, volatile=True)
                    if f3 == want:
                        hit = f3 == want
                    else:
                        f3 = tl.load(ptr, volatile=True)
                        hit = f0 == want
            n += 1
            if CLOCK:
                go = (hit == 0) & (_clock() < t_end)
            else:
                go = (hit == 0) & (n < t_end)
        if hit == 0:
            tl.store(word_ptr + 1, want, cache_modifier=".wt")

    @triton.jit
    def _stage_image(src_ptr, dst_ptr, WORDS: tl.constexpr, WP: tl.constexpr):
        # Program 0 of a staged stem gate: the image (WORDS 32-bit words; WP, a power of two >=
        # WORDS) from pinned host memory into device memory, each thread reading 16-byte vectors
        # (not kept in any cache: the host rewrites that memory every call), then a thread
        # barrier: all of it stored before the release that lets the other programs read it.
        offs = tl.arange(0, WP)
        px = tl.load(src_ptr.to(tl.pointer_type(tl.int32)) + offs, mask=offs < WORDS, cache_modifier=".cv")
        tl.store(dst_ptr.to(tl.pointer_type(tl.int32)) + offs, px, mask=offs < WORDS)
        tl.debug_barrier()

    @triton.jit
    def gate_kernel(flag_ptr, seq_ptr, word_ptr, limit, CLOCK: tl.constexpr, PDL: tl.constexpr):
        """The gate of e2e_gate: kernel, one program: the ready stamp, the wait for the host's flag
        (_wait_for), then the kernel ends.  PDL: let
        the net's first kernel launch now; its programs wait at their PDL wait for the gate's
        end, so the kernel boundary after the gate is not on the critical path."""
        if PDL:
            gdc_launch_dependents()
        want = _call_number(seq_ptr)
        tl.store(word_ptr + 2, want, cache_modifier=".wt")
        _wait_for(flag_ptr, want, word_ptr, limit, CLOCK)
