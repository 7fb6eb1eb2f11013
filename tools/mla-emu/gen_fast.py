"""Turn kernels/mla/mla_decode_fast.cu (the fast rung) into host C++ for the
emulator: dinf_sm90.cuh's wrappers become sm90_emu.h's host stand-ins, the
dynamic shared memory is the CTA's emulated buffer, and the launcher is
launchers_fast.inc (each CTA's 384 threads as fibers, emu_rt.cpp). Everything
else (roles, ring protocol, index math, softmax, guards) is the kernel source
as is. MUT='old|||new' applies one textual mutation first.
usage: gen_fast.py REPO_ROOT OUT.cpp"""
import os, sys
root, out = sys.argv[1], sys.argv[2]
src = open(os.path.join(root, 'kernels/mla/mla_decode_fast.cu')).read()
here = os.path.dirname(os.path.abspath(__file__))
mut = os.environ.get('MUT_FAST')
if mut:
    old, new = mut.split('|||')
    assert src.count(old) == 1, ('mutation not unique', old, src.count(old))
    src = src.replace(old, new)
def rep(old, new):
    global src
    assert src.count(old) == 1, ('gen_fast.py: the kernel changed, update me', old)
    src = src.replace(old, new)
rep('#include <cuda.h>\n', '')
rep('#include <cuda_runtime_api.h>\n', '#include "cuda_emu.h"\n')
rep('#include "../../jit/templates/dinf_sm90.cuh"\n', '#include "sm90_emu.h"\n')
rep('#include "../../lib/core/cuda_guard.h"\n', '')  # the launcher's (replaced below)
src = src.replace('"../../lib/', '"' + os.path.join(root, 'lib') + '/')
rep('extern __shared__ __align__(1024) uint8_t smem_raw[];',
    'uint8_t *smem_raw = reinterpret_cast<uint8_t *>(emu_fast_smem_lo);')
c = src.index('/* ------------------------------------------------------------- launcher -- */')
src = src[:c] + open(os.path.join(here, 'launchers_fast.inc')).read()
open(out, 'w').write(src)
