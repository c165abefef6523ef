"""The optional native kernels (core/_narrow_attention.cpp, core/_norm_act.cpp, core/_winograd.cpp,
core/_matmul.cpp);
everything else about the package is in pyproject.toml.

They are built with OpenMP so that their threads are torch's own (see the sources). Where no
compiler can build them (no compiler, or one without OpenMP, such as Apple's clang), the install
goes on without them and the engine uses torch's kernels only.
"""
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

OPENMP = {"msvc": ["/openmp"]}  # by compiler type; gcc and clang take -fopenmp
OPTIMISE = {"msvc": ["/O2"]}
# gcc and clang: Python's own CFLAGS carry -fwrapv, which stops the compiler from assuming that the
# kernels' int index arithmetic never overflows; the kernels ran 7-15 % slower with it (2 AVX2 EPYC cores)
GCC_OPTIMISE = ["-O3", "-fno-wrapv"]


class BuildExt(build_ext):
    def build_extensions(self) -> None:
        kind = self.compiler.compiler_type
        for ext in self.extensions:
            ext.extra_compile_args = OPTIMISE.get(kind, GCC_OPTIMISE) + OPENMP.get(kind, ["-fopenmp"])
            ext.extra_link_args = [] if kind == "msvc" else ["-fopenmp"]
        super().build_extensions()


setup(
    ext_modules=[
        Extension(f"core.{name}", [f"core/{name}.cpp"], depends=["core/_avx2.h", "core/_matmul.h", "core/_narrow_attention_bf16.h"], language="c++", optional=True)
        for name in ("_narrow_attention", "_norm_act", "_winograd", "_matmul")
    ],
    cmdclass={"build_ext": BuildExt},
)
