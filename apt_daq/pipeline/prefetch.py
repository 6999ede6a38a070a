"""A software prefetch for numba kernels: LLVM's ``llvm.prefetch`` on an array element's
address, a hint that loads nothing and cannot fault (used by the fused pipeline kernel,
:func:`apt_daq.pipeline.process.split_block`, to fetch the next block of raw records)."""

from __future__ import annotations

from llvmlite import ir
from llvmlite.binding import llvm_version_info
from numba import types
from numba.extending import intrinsic

# the intrinsic's name mangles its pointer type: "p0" with opaque pointers (LLVM >= 15)
_NAME = "llvm.prefetch.p0" if llvm_version_info[0] >= 15 else "llvm.prefetch.p0i8"


@intrinsic
def prefetch(typingctx, arr, idx):
    """Prefetch (a hint: no load, no fault) the cache line of ``arr[idx]``, ``idx`` past the
    end too (the address is computed as an integer, not as an array element's)."""
    if not isinstance(arr, types.Array) or not isinstance(idx, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        i64, i32, i8p = ir.IntType(64), ir.IntType(32), ir.IntType(8).as_pointer()
        size = i64(context.get_abi_sizeof(context.get_data_type(sig.args[0].dtype)))
        off = builder.mul(context.cast(builder, args[1], sig.args[1], types.int64), size)
        ptr = builder.inttoptr(builder.add(builder.ptrtoint(ary.data, i64), off), i8p)
        fn = builder.module.declare_intrinsic(_NAME, fnty=ir.FunctionType(
            ir.VoidType(), [i8p, i32, i32, i32]))
        builder.call(fn, [ptr, i32(0), i32(3), i32(1)])  # read, keep in all levels, data
        return context.get_dummy_value()

    return types.void(arr, idx), codegen
