# Builds the fp4moe PyTorch extension against the installed PyTorch, linking the fp4moe static
# libraries from a CMake build tree (FP4MOE_BUILD_DIR, default ../build-py) or an install prefix
# (FP4MOE_PREFIX). See python/README.md.
#
# libstdc++: the extension must use the shared libstdc++ that Python and PyTorch have loaded. A
# compiler whose library path has only libstdc++.a (e.g. a wrapper with -B pointing at a GCC
# tree holding the static library, as on the GPU machine: CXX=/opt/gcc/bin/g++) links parts of
# libstdc++ statically into the extension; those then run against the process's shared
# libstdc++ state (locale facet ids, ...) and crash - the first `std::ostream << long` in the
# library segfaulted. So the loaded libstdc++.so is named on the link line (before the
# driver's implicit -lstdc++), and the result is checked.
import os
import subprocess

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


def loaded_libstdcxx():
    """The libstdc++.so this process (Python + PyTorch) has loaded, or None."""
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.split()[-1]
                if "/libstdc++.so" in path and os.path.exists(path):
                    return path
    except OSError:
        pass
    return None


class Build(BuildExtension):
    def build_extension(self, ext):
        super().build_extension(ext)
        # A statically linked piece of libstdc++ shows as a defined std::ostream::_M_insert<long>.
        path = self.get_ext_fullpath(ext.name)
        try:
            nm = subprocess.run(["nm", "-D", "--defined-only", path], capture_output=True, text=True).stdout
        except OSError:
            return
        if "_ZNSo9_M_insertIlEERSoT_" in nm:
            raise SystemExit(f"fp4moe setup.py: {path} contains a static copy of libstdc++ (std::ostream::_M_insert "
                             "is defined in it); it would crash at the first stream output. Link with a compiler "
                             "that finds libstdc++.so (set CXX), see the note at the top of setup.py")


include, libs = find_libs()
stdcxx = loaded_libstdcxx()
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
            extra_link_args=[stdcxx] if stdcxx else [],
        )
    ],
    cmdclass={"build_ext": Build},
)
