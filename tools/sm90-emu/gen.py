"""Prepare the sources sm90-emu compiles (see README.md).

usage: gen.py REPO_ROOT OUT_DIR

Copies include/, lib/core, lib/gemm and jit/ (templates + jit_internal.h)
into OUT_DIR/src (a file is rewritten only when its text changes, so make
rebuilds only what changed), then:
  - MUT='old|||new' plants one textual change ('&&&' separates several,
    applied in order; each must match exactly once) (exactly one occurrence over
    the copied kernel templates and lib/gemm sources, or in MUT_FILE alone
    when set, e.g. jit/templates/fp8_gemm.cuh for text both rungs share) to
    check that the harness catches a bug;
  - replaces jit/templates/dinf_sm90.cuh and dinf_prelude.cuh by the
    emulated ones (refusing to build when the real header has a wrapper the
    emulated one lacks);
  - rewrites what host C++ cannot compile in the kernel templates: the
    remaining inline PTX (known patterns only, anything else is an error) and
    `extern __shared__` arrays (the CTA's dynamic shared memory);
  - writes OUT_DIR/kernels_<template>_<i>.cpp: the kernel instances of
    INSTANCES below, registered for the emulated dinf__jit_get_kernel.
"""
import os
import re
import shutil
import sys

root, out = sys.argv[1], sys.argv[2]
here = os.path.dirname(os.path.abspath(__file__))
src = os.path.join(out, 'src')

SMEM_LIMIT = 232448


def fp8_smem(bm, bn, st):
    return 1024 + st * (bm * 128 + bn * 128 + bm * 4) + st * 16


def default_stages(bm, bn):
    st = 8
    while st > 1 and fp8_smem(bm, bn, st) > SMEM_LIMIT:
        st -= 1
    return st


# (template, params): every config dinf__fp8_heuristic can pick, plus shallow
# pipelines (1-3 stages: every k block wraps the ring) the harness forces.
INSTANCES = []
for gemm_type in (0, 1, 2):
    for bm in ((128,) if gemm_type == 1 else (64, 128)):
        for bn in (16, 32, 64, 128):
            stages = {default_stages(bm, bn)}
            if (bm, bn) in ((64, 32), (128, 64), (128, 16), (64, 128)):
                stages |= {1, 2, 3}
            for st in sorted(stages):
                INSTANCES.append(('fp8_gemm', (gemm_type, bm, bn, st)))
# The weight-gradient kernel (fp8_gemm_1d1d.cuh, when the tree has it): every
# config its heuristic can pick (block_m x block_n, stages by its smem rule)
# and the 1-3 stage rings the harness's wgrad cases force.
def wgrad_smem(bm, bn, st):
    return fp8_smem(bm, bn, st) + 128 + st * ((bn * 4 + 127) // 128 * 128)
has_wgrad = os.path.exists(os.path.join(root, 'jit/templates/fp8_gemm_1d1d.cuh'))
if has_wgrad:
    for bm in (64, 128):
        for bn in (16, 32, 64, 128):
            st = 8
            while st > 1 and wgrad_smem(bm, bn, st) > SMEM_LIMIT:
                st -= 1
            INSTANCES.append(('fp8_gemm_1d1d', (bm, bn, st)))
    for params in ((128, 64, 1), (64, 32, 2), (128, 128, 3)):
        INSTANCES.append(('fp8_gemm_1d1d', params))
# The fast rung (fp8_gemm_fast.cuh, when the tree has it): the forced configs
# of the harness's fast cases (gemm_emu_test.c, one case per line).
fast_cases = re.findall(
    r'\{"(\w+)", (NORMAL|CONTIG|MASKED), ([-\d, ]+), \{[-\d, ]*\}, 1, (\d+), (\d+)\}',
    open(os.path.join(here, 'gemm_emu_test.c')).read())
FORMS = {'NORMAL': 0, 'CONTIG': 1, 'MASKED': 2}
has_fast = os.path.exists(os.path.join(root, 'jit/templates/fp8_gemm_fast.cuh'))
for name, form, nums, cluster, split in fast_cases:
    v = [int(x) for x in nums.split(',') if x.strip()]
    bm, bn, st = v[8], v[9], v[10]
    if has_fast:
        INSTANCES.append(('fp8_gemm_fast', (FORMS[form], bm, bn, st, int(cluster), int(split))))
# EMU_FAST_ALL=1: every fast-rung block_n x block_m x (cluster, split-K) at 2
# stages, for random sweeps (EMU_RANDOM) over the fast rung.
if has_fast and os.environ.get('EMU_FAST_ALL') == '1':
    for form in (0, 1, 2):
        for bm in ((128,) if form == 1 else (64, 128, 256)):
            for bn in range(16, 161 if bm < 256 else 129, 16):
                for cl, sp in ((1, 1), (2, 1)) if bm == 256 else ((1, 1), (2, 1), (2, 2), (3, 3), (4, 4)):
                    inst = ('fp8_gemm_fast', (form, bm, bn, 2, cl, sp))
                    if inst not in INSTANCES:
                        INSTANCES.append(inst)
only = os.environ.get('EMU_CONFIGS')  # "0,128,128,6;2,64,32,1": build only these fp8_gemm configs
if only:
    keep = {tuple(int(v) for v in item.split(',')) for item in only.split(';') if item}
    # a fast-rung config has 6 constants, a simple one 4
    INSTANCES = [i for i in INSTANCES if i[1] in keep]
extra = os.environ.get('EMU_EXTRA_CONFIGS', '')
for item in filter(None, extra.split(';')):
    name, params = item.split(':')
    INSTANCES.append((name, tuple(int(v) for v in params.split(','))))


def write_if_changed(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.exists(path) and open(path).read() == text:
        return
    with open(path, 'w') as f:
        f.write(text)


files = {}
for sub in ('include', 'lib/core', 'lib/gemm', 'jit/templates'):
    base = os.path.join(root, sub)
    for dirpath, _, names in os.walk(base):
        for n in names:
            p = os.path.join(dirpath, n)
            files[os.path.relpath(p, root)] = open(p).read()
for n in ('jit/jit_internal.h', 'jit/jit_source.c'):
    files[n] = open(os.path.join(root, n)).read()

mut = os.environ.get('MUT')
# several changes at once: 'old1|||new1&&&old2|||new2' (each must match once)
for one in (mut.split('&&&') if mut else []):
    old, new = one.split('|||')
    targets = [k for k in files if k.startswith('jit/templates/') or k.startswith('lib/gemm/')]
    only = os.environ.get('MUT_FILE')  # e.g. jit/templates/fp8_gemm.cuh: text both rungs share
    if only:
        if only not in targets:
            sys.exit('gen.py: MUT_FILE=%s is not one of the copied kernel/lib/gemm sources' % only)
        targets = [only]
    hits = [(k, files[k].count(old)) for k in targets if files[k].count(old)]
    total = sum(c for _, c in hits)
    if total != 1:
        sys.exit('gen.py: MUT must match exactly once in jit/templates or lib/gemm, matched %d times %s'
                 % (total, hits))
    k = hits[0][0]
    files[k] = files[k].replace(old, new)
    print('gen.py: mutation planted in', k)

# Every wrapper of the real dinf_sm90.cuh must exist in the emulated one.
real = files['jit/templates/dinf_sm90.cuh']
emul = open(os.path.join(here, 'templates/dinf_sm90.cuh')).read()
name_re = r'(?:__device__\s+__forceinline__\s+(?:static\s+)?[\w:<>\s\*&]+?\s+(\w+)\s*\(|struct\s+(?:alignas\(\d+\)\s+)?(\w+)\s*[{;])'
def names(text):
    return {a or b for a, b in re.findall(name_re, text)} - {'mma'}
missing = sorted(names(real) - names(emul))
if missing:
    sys.exit('gen.py: jit/templates/dinf_sm90.cuh has wrappers the emulated header lacks: '
             + ', '.join(missing))
# the emulated header is a superset: only the wrappers the real one has are compiled
files['jit/templates/dinf_sm90.cuh'] = ''.join('#define EMU_HAVE_%s 1\n' % n for n in sorted(names(real))) + emul
files['jit/templates/dinf_prelude.cuh'] = open(os.path.join(here, 'templates/dinf_prelude.cuh')).read()

# Inline PTX left in kernel templates: known patterns -> host code.
ASM = [
    (r'asm\("cvt\.rn\.bf16x2\.f32 %0, %1, %2;"\s*:\s*"=r"\((\w+)\)\s*:\s*"f"\((\w+)\),\s*"f"\((\w+)\)\);',
     r'\1 = emu::cvt_rn_bf16x2_f32(\2, \3);'),
    # empty asm: a compiler barrier on a register (no instruction)
    (r'asm volatile\(""\s*:\s*"\+[rlf]"\((\w+)\)\s*(?::\s*:\s*"memory"\s*)?\);', r'(void)\1;'),
]
registry = files['jit/jit_source.c']
templates = {m[0]: (m[1], m[2], int(m[3]))
             for m in re.findall(r'\{"(\w+)", "([\w.]+)", "([\w:]+)", (\d+)', registry)}
for k in list(files):
    if not k.startswith('jit/templates/') or k.endswith(('dinf_sm90.cuh', 'dinf_prelude.cuh')):
        continue
    t = files[k]
    for pat, rep in ASM:
        t = re.sub(pat, rep, t)
    t = re.sub(r'extern __shared__ (?:__align__\(\d+\) )?(\w+) (\w+)\[\];',
               r'\1 *const \2 = reinterpret_cast<\1 *>(emu::smem_dynamic());', t)
    files[k] = t
for name, _ in INSTANCES:
    header = templates[name][0]
    t = files['jit/templates/' + header]
    left = [l.strip() for l in t.splitlines() if re.search(r'\basm\s*(volatile\s*)?\(', l)]
    if left:
        sys.exit('gen.py: %s has inline PTX the emulator does not know: %s' % (header, left[0]))
    if '__shared__' in t:
        sys.exit('gen.py: %s declares __shared__ storage the emulator does not rewrite' % header)

for k, t in files.items():
    write_if_changed(os.path.join(src, k), t)

# Kernel instances, two translation units (make -j2).
units = [[], []]
for i, inst in enumerate(INSTANCES):
    units[i % 2].append((i, inst))
for u, insts in enumerate(units):
    lines = ['// generated by tools/sm90-emu/gen.py', '#include "emu_kernels.h"',
             '#define __CUDACC_RTC__ 1 /* the templates\' constexpr host-device helpers */']
    for h in sorted({templates[name][0] for _, (name, _) in insts}):
        lines.append('#include "%s"' % os.path.join(src, 'jit/templates', h))
    regs = []
    for i, (name, params) in insts:
        header, func, nparams = templates[name]
        assert len(params) == nparams, (name, params)
        plist = ', '.join(str(p) for p in params)
        if name == 'fp8_gemm':
            lines.append('static void run_%d(void **a) { %s<%s>(*(const dinf_jit::tensor_map_t *)a[0], '
                         '*(const dinf_jit::tensor_map_t *)a[1], *(const dinf_jit::tensor_map_t *)a[2], '
                         '*(const dinf_fp8_gemm_args *)a[3]); }' % (i, func, plist))
        elif name == 'fp8_gemm_fast':
            lines.append('static void run_%d(void **a) { %s<%s>(*(const dinf_jit::tensor_map_t *)a[0], '
                         '*(const dinf_jit::tensor_map_t *)a[1], *(const dinf_jit::tensor_map_t *)a[2], '
                         '*(const dinf_jit::tensor_map_t *)a[3], *(const dinf_fp8_gemm_args *)a[4]); }'
                         % (i, func, plist))
        elif name == 'fp8_gemm_1d1d':
            lines.append('static void run_%d(void **a) { %s<%s>(*(const dinf_jit::tensor_map_t *)a[0], '
                         '*(const dinf_jit::tensor_map_t *)a[1], *(const dinf_jit::tensor_map_t *)a[2], '
                         '*(const dinf_jit::tensor_map_t *)a[3], *(const dinf_fp8_gemm_args *)a[4]); }'
                         % (i, func, plist))
        else:
            sys.exit('gen.py: no launcher for template %s' % name)
        regs.append('{"%s", %d, {%s}, run_%d}' % (name, nparams, plist, i))
    lines.append('static const EmuKernel table[] = {%s};' % ', '.join(regs))
    lines.append('static EmuKernelRegistrar reg(table, %d);' % len(regs))
    write_if_changed(os.path.join(out, 'kernels_%d.cpp' % u), '\n'.join(lines) + '\n')
