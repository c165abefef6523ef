// fp32 linear layers, y = x w + bias + added, by the register tiles of core/_matmul.h, for
// core/matmul.py: attention's projections and the 1x1 convolutions of channels-last activations.
//
// Layout: x (rows, c), w (k, c) as torch's linear layers keep it (packed here for the tiles) and
// y (rows, k) contiguous fp32, k a multiple of 8; bias (k,) or none; added (rows, k), which the
// tiles add as they write y (attention's residual), or none.
// The module is plain CPython: core/matmul.py passes data pointers, and the GIL is released while
// the threads run.

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <cstdint>
#include <vector>

#include "_avx2.h"
#include "_matmul.h"

static PyObject* py_linear(PyObject*, PyObject* args) {
    unsigned long long x, w, bias, added, y;
    long rows;
    int c, k, threads;
    if (!PyArg_ParseTuple(args, "KKKKKliii", &x, &w, &bias, &added, &y, &rows, &c, &k, &threads))
        return nullptr;
    if (rows <= 0 || c <= 0 || k <= 0 || k % 8) {
        PyErr_SetString(PyExc_ValueError, "linear: out features must be a positive multiple of 8");
        return nullptr;
    }
#ifdef CORE_X86
    Py_BEGIN_ALLOW_THREADS
    // packed on a cache line's start, as torch's allocations are: panels' rows of 64 bytes each
    // in one line
    std::vector<float> buffer(static_cast<size_t>(c) * k + 16);
    const auto start = (reinterpret_cast<std::uintptr_t>(buffer.data()) + 63) & ~std::uintptr_t{63};
    float* packed = reinterpret_cast<float*>(start);
    pack_columns(pointer(w), 1, c, packed, c, k);
    matmul(pointer(x), packed, bias ? pointer(bias) : nullptr, added ? pointer(added) : nullptr, pointer(y), rows,
           c, k, threads);
    Py_END_ALLOW_THREADS Py_RETURN_NONE;
#else
    return PyErr_Format(PyExc_RuntimeError, "matmul needs an x86-64 CPU");
#endif
}

static PyMethodDef methods[] = {
    {"supported", py_supported, METH_NOARGS, "Whether this CPU runs the kernels (AVX2 and FMA)."},
    {"linear", py_linear, METH_VARARGS,
     "linear(x, w, bias or 0, added or 0, y, rows, c, k, threads): y = x w^T + bias + added, w (k, c)"},
    {nullptr, nullptr, 0, nullptr},
};

static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_matmul", "fp32 linear layers by AVX2 register tiles.", -1,
                             methods, nullptr, nullptr, nullptr, nullptr};

PyMODINIT_FUNC PyInit__matmul(void) { return PyModule_Create(&module); }
