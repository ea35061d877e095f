# Builds the fp4moe PyTorch extension against the installed PyTorch, linking the fp4moe static
# libraries from a CMake build tree (FP4MOE_BUILD_DIR, default ../build-py) or an install prefix
# (FP4MOE_PREFIX). See python/README.md.
import os

from setuptools import setup
from torch.utils.cpp_extension import BuildExtension, CUDAExtension

here = os.path.dirname(os.path.abspath(__file__))
repo = os.path.dirname(here)


def find_libs():
    prefix = os.environ.get("FP4MOE_PREFIX")
    if prefix:
        libdir = next((d for d in (os.path.join(prefix, "lib"), os.path.join(prefix, "lib64"))
                       if os.path.exists(os.path.join(d, "libfp4moe.a"))), None)
        if libdir is None:
            raise SystemExit(f"FP4MOE_PREFIX={prefix}: expected lib/libfp4moe.a under it, found none")
        include = os.path.join(prefix, "include")
        libs = [os.path.join(libdir, n) for n in ("libfp4moe.a", "libfp4moe_cuda.a", "libfp4moe_core.a")]
    else:
        build = os.environ.get("FP4MOE_BUILD_DIR", os.path.join(repo, "build-py"))
        include = os.path.join(repo, "include")
        libs = [os.path.join(build, "libfp4moe.a"), os.path.join(build, "src", "cuda", "libfp4moe_cuda.a"),
                os.path.join(build, "libfp4moe_core.a")]
        if not os.path.exists(libs[0]):
            raise SystemExit(f"FP4MOE_BUILD_DIR={build}: expected libfp4moe.a there; build the CMake target "
                             "fp4moe_api first (see python/README.md)")
    libs = [l for l in libs if os.path.exists(l)]
    if not any(l.endswith("libfp4moe_cuda.a") for l in libs):
        print("fp4moe setup.py: no libfp4moe_cuda.a - the extension will have the CPU reference only")
    return include, libs


include, libs = find_libs()
setup(
    name="fp4moe",
    version="0.1.0",
    packages=["fp4moe"],
    ext_modules=[
        CUDAExtension(
            "fp4moe._C",
            ["csrc/binding.cpp"],
            include_dirs=[include],
            extra_objects=libs,  # order matters: fp4moe, fp4moe_cuda, fp4moe_core
            extra_compile_args={"cxx": ["-std=c++20", "-O2"]},
        )
    ],
    cmdclass={"build_ext": BuildExtension},
)
