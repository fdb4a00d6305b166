// edgeres_tvm_classify: classify an NCHW float32 tensor with an edgeres TVM library (model.so).
//
// Usage:
//   edgeres_tvm_classify model.so input.bin [--shape NxCxHxW] [--labels labels.txt]
//                        [--topk 5] [--logits] [--repeat N] [--variant NAME]
//   edgeres_tvm_classify model.so --selftest BUNDLE/golden [--shape NxCxHxW] [--variant NAME]
//   edgeres_tvm_classify model.so --list-variants
//
// Portable bundles (target x86-64) hold one library per x86 ISA level and model.variants; the
// runner loads the best one this CPU runs, or --variant NAME / $EDGERES_TVM_VARIANT (variants.h).
//
// input.bin holds raw little-endian float32 values in NCHW order, already preprocessed
// (resized, cropped, normalised) as the bundle's manifest.json says. --shape is the input
// shape the library was compiled for; the file may hold any number of C x H x W samples,
// which run N at a time (the last group zero-padded). Without --shape the input is taken as
// one 3-channel square image (1x3xSxS, S from the file size).
//
// Output (tab-separated, one record per line; '#' lines are comments):
//   top     <sample> <rank> <class index> <logit> <softmax probability> <class name>
//   logits  <sample> <v0> <v1> ...                      (with --logits)
//   latency_ms <median> <min> <runs>                     (with --repeat N: N more runs of one group)
//   selftest <PASS|FAIL> samples=.. max_abs_err=.. atol=.. top1=../.. decisive_flips=.. min_cosine=..
//            limit_cosine=..                              (with --selftest: exit 0 PASS, 1 FAIL)
//
// --selftest runs the bundle's golden inputs (golden/selftest.txt names the files, shapes and
// tolerances edgeres recorded at compile time) and compares with the expected logits: every logit
// within atol, every sample's cosine >= min_cosine, and no sample whose expected top-1 leads by
// more than 2*atol may change it.
//
// Runtime calls (TVM >= 0.20 Relax VM through the tvm-ffi C++ API):
//   Module::LoadFromFile(so) -> "vm_load_executable"() -> "vm_initialization"(kDLCPU, 0, pooled)
//   -> "main"(input tensor). Threads: TVM_NUM_THREADS (default: one per core).

#include <tvm/ffi/any.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include "variants.h"

namespace ffi = tvm::ffi;

namespace {

constexpr int kPooledAllocator = 2;  // tvm::runtime::memory::AllocatorType::kPooled

[[noreturn]] void die(const std::string& msg, int code = 2) {
    std::cerr << "error: " << msg << "\n";
    std::exit(code);
}

struct Options {
    std::string model;
    std::string input;
    std::string labels;
    std::vector<int64_t> shape;
    int topk = 5;
    bool logits = false;
    int repeat = 0;
    std::string selftest;  // golden directory
    std::string variant;
    bool listVariants = false;
};

void usage() {
    std::cerr << "usage: edgeres_tvm_classify model.so input.bin [--shape NxCxHxW] "
                 "[--labels labels.txt] [--topk K] [--logits] [--repeat N] [--variant NAME]\n"
                 "       edgeres_tvm_classify model.so --selftest BUNDLE/golden [--shape NxCxHxW] [--variant NAME]\n"
                 "       edgeres_tvm_classify model.so --list-variants\n";
}

std::vector<int64_t> parseShape(const std::string& text) {
    std::vector<int64_t> dims;
    std::stringstream ss(text);
    std::string part;
    while (std::getline(ss, part, 'x')) {
        char* end = nullptr;
        long long v = std::strtoll(part.c_str(), &end, 10);
        if (part.empty() || *end != '\0' || v <= 0) {
            die("--shape must look like 1x3x224x224 (positive integers), got '" + text + "'");
        }
        dims.push_back(v);
    }
    if (dims.size() != 4) {
        die("--shape needs 4 dimensions NxCxHxW, got '" + text + "'");
    }
    return dims;
}

int parsePositive(const std::string& flag, const std::string& text) {
    char* end = nullptr;
    long v = std::strtol(text.c_str(), &end, 10);
    if (text.empty() || *end != '\0' || v <= 0 || v > 1000000) {
        die(flag + " needs a positive integer, got '" + text + "'");
    }
    return static_cast<int>(v);
}

Options parseArgs(int argc, char** argv) {
    Options o;
    std::vector<std::string> positional;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto next = [&]() -> std::string {
            if (i + 1 >= argc) die(a + " needs a value");
            return argv[++i];
        };
        if (a == "--shape") {
            o.shape = parseShape(next());
        } else if (a == "--labels") {
            o.labels = next();
        } else if (a == "--topk") {
            o.topk = parsePositive(a, next());
        } else if (a == "--repeat") {
            o.repeat = parsePositive(a, next());
        } else if (a == "--logits") {
            o.logits = true;
        } else if (a == "--selftest") {
            o.selftest = next();
        } else if (a == "--variant") {
            o.variant = next();
        } else if (a == "--list-variants") {
            o.listVariants = true;
        } else if (a == "-h" || a == "--help") {
            usage();
            std::exit(0);
        } else if (!a.empty() && a[0] == '-') {
            usage();
            die("unknown option " + a);
        } else {
            positional.push_back(a);
        }
    }
    if (!o.selftest.empty() || o.listVariants) {
        if (positional.size() != 1) {
            die(o.listVariants ? "--list-variants takes the model library only"
                               : "--selftest takes the model library only (the inputs come from the golden files)");
        }
        o.model = positional[0];
        return o;
    }
    if (positional.size() != 2) {
        usage();
        die("need exactly two arguments: the model library and the input tensor file");
    }
    o.model = positional[0];
    o.input = positional[1];
    return o;
}

std::vector<float> readFloats(const std::string& path) {
    std::ifstream f(path, std::ios::binary | std::ios::ate);
    if (!f) die("cannot open input tensor " + path);
    std::streamsize size = f.tellg();
    if (size <= 0 || size % static_cast<std::streamsize>(sizeof(float)) != 0) {
        die(path + " is not a float32 tensor (" + std::to_string(size) + " bytes)");
    }
    std::vector<float> data(static_cast<size_t>(size) / sizeof(float));
    f.seekg(0, std::ios::beg);
    if (!f.read(reinterpret_cast<char*>(data.data()), size)) die("cannot read " + path);
    return data;
}

// The compiled input shape, and how many samples the file holds.
std::vector<int64_t> resolveShape(const Options& o, size_t numel, int64_t* samples) {
    if (!o.shape.empty()) {
        int64_t per = o.shape[1] * o.shape[2] * o.shape[3];
        if (numel % static_cast<size_t>(per) != 0) {
            die("the input file holds " + std::to_string(numel) + " floats, not a whole number of " +
                std::to_string(o.shape[1]) + "x" + std::to_string(o.shape[2]) + "x" + std::to_string(o.shape[3]) +
                " samples; check --shape");
        }
        *samples = static_cast<int64_t>(numel) / per;
        return o.shape;
    }
    int64_t hw = static_cast<int64_t>(numel / 3);
    auto side = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(hw))));
    if (numel % 3 != 0 || side * side != hw) {
        die("cannot infer the input shape from " + std::to_string(numel) + " floats; pass --shape NxCxHxW");
    }
    *samples = 1;
    return {1, 3, side, side};
}

std::vector<std::string> readLabels(const Options& o) {
    std::vector<std::string> candidates;
    if (!o.labels.empty()) {
        candidates.push_back(o.labels);
    } else {
        std::string dir = o.model.substr(0, o.model.find_last_of('/') + 1);
        candidates = {dir + "labels.txt", dir + "../labels.txt"};
    }
    for (const auto& path : candidates) {
        std::ifstream f(path);
        if (!f) continue;
        std::vector<std::string> names;
        std::string line;
        while (std::getline(f, line)) {
            if (!line.empty() && line.back() == '\r') line.pop_back();
            names.push_back(line);
        }
        return names;
    }
    if (!o.labels.empty()) die("cannot open labels file " + o.labels);
    return {};
}

std::string firstLine(const std::string& text) {
    return text.substr(0, text.find('\n'));
}

// --selftest: the golden files edgeres wrote into the bundle (golden/selftest.txt lists them).
struct Golden {
    std::vector<float> inputs, expected;
    std::vector<int64_t> inputShape;  // N C H W
    int64_t classes = 0;
    double atol = 0.0, minCosine = 1.0;
};

Golden readGolden(const std::string& dir) {
    std::ifstream f(dir + "/selftest.txt");
    if (!f) die("cannot open " + dir + "/selftest.txt; pass the bundle's golden/ directory to --selftest");
    Golden g;
    std::string line, inputsFile, expectedFile;
    int64_t expectedRows = 0;
    while (std::getline(f, line)) {
        std::istringstream ss(line);
        std::string key;
        if (!(ss >> key) || key[0] == '#') continue;
        if (key == "inputs") {
            g.inputShape.assign(4, 0);
            ss >> inputsFile >> g.inputShape[0] >> g.inputShape[1] >> g.inputShape[2] >> g.inputShape[3];
        } else if (key == "expected") {
            ss >> expectedFile >> expectedRows >> g.classes;
        } else if (key == "atol") {
            ss >> g.atol;
        } else if (key == "min_cosine") {
            ss >> g.minCosine;
        }
        if (ss.fail()) die("malformed line in " + dir + "/selftest.txt: " + line);
    }
    if (inputsFile.empty() || expectedFile.empty() || g.classes <= 0 || expectedRows != g.inputShape[0]) {
        die(dir + "/selftest.txt lacks the inputs/expected records; recompile the bundle");
    }
    g.inputs = readFloats(dir + "/" + inputsFile);
    g.expected = readFloats(dir + "/" + expectedFile);
    int64_t perSample = g.inputShape[1] * g.inputShape[2] * g.inputShape[3];
    if (static_cast<int64_t>(g.inputs.size()) != g.inputShape[0] * perSample ||
        static_cast<int64_t>(g.expected.size()) != expectedRows * g.classes) {
        die("the golden files in " + dir + " do not have the sizes selftest.txt records; recompile the bundle");
    }
    return g;
}

// Append the first `valid` rows of a logits tensor to `all`.
void collectLogits(const ffi::Tensor& out, int64_t valid, std::vector<float>* all) {
    if (out.dtype().code != kDLFloat || out.dtype().bits != 32) die("expected float32 logits", 3);
    auto shape = out.shape();
    int64_t rows = shape.size() >= 2 ? shape[0] : 1;
    int64_t classes = out.numel() / std::max<int64_t>(rows, 1);
    const float* data = static_cast<const float*>(out.data_ptr());
    all->insert(all->end(), data, data + std::min(rows, valid) * classes);
}

// Compare with the expected logits, print the selftest record; return the exit status (0 PASS, 1 FAIL).
int reportSelftest(const Golden& g, const std::vector<float>& got) {
    const int64_t n = g.inputShape[0], k = g.classes;
    if (static_cast<int64_t>(got.size()) != n * k) {
        std::printf("selftest\tFAIL\tthe model gave %lld values for %lld samples x %lld classes\n",
                    static_cast<long long>(got.size()), static_cast<long long>(n), static_cast<long long>(k));
        return 1;
    }
    double maxErr = 0.0, minCos = 1.0;
    int64_t agree = 0, flips = 0;
    bool finite = true;
    for (int64_t i = 0; i < n; ++i) {
        const float* a = got.data() + i * k;
        const float* e = g.expected.data() + i * k;
        double dot = 0.0, na = 0.0, ne = 0.0;
        int64_t ta = 0, te = 0;
        for (int64_t c = 0; c < k; ++c) {
            if (!std::isfinite(a[c])) finite = false;
            maxErr = std::max(maxErr, std::fabs(static_cast<double>(a[c]) - e[c]));
            dot += static_cast<double>(a[c]) * e[c];
            na += static_cast<double>(a[c]) * a[c];
            ne += static_cast<double>(e[c]) * e[c];
            if (a[c] > a[ta]) ta = c;
            if (e[c] > e[te]) te = c;
        }
        minCos = std::min(minCos, dot / std::max(std::sqrt(na * ne), 1e-12));
        double second = -INFINITY;
        for (int64_t c = 0; c < k; ++c) {
            if (c != te) second = std::max(second, static_cast<double>(e[c]));
        }
        bool decisive = k > 1 && (e[te] - second) > 2.0 * g.atol;
        if (ta == te) {
            ++agree;
        } else if (decisive) {
            ++flips;
        }
    }
    bool pass = finite && maxErr <= g.atol && minCos >= g.minCosine && flips == 0;
    std::printf("selftest\t%s\tsamples=%lld\tmax_abs_err=%.6g\tatol=%.6g\ttop1=%lld/%lld\tdecisive_flips=%lld"
                "\tmin_cosine=%.8f\tlimit_cosine=%.8g%s\n",
                pass ? "PASS" : "FAIL", static_cast<long long>(n), maxErr, g.atol, static_cast<long long>(agree),
                static_cast<long long>(n), static_cast<long long>(flips), minCos, g.minCosine,
                finite ? "" : "\tnon-finite outputs");
    return pass ? 0 : 1;
}

struct CPUAlloc {
    void AllocData(DLTensor* t) {
        t->data = std::aligned_alloc(64, (ffi::GetDataSize(*t) + 63) / 64 * 64);
        if (t->data == nullptr) die("out of memory allocating the input tensor", 3);
    }
    void FreeData(DLTensor* t) { std::free(t->data); }
};

ffi::Module loadLibrary(const std::string& path) {
    std::ifstream probe(path, std::ios::binary);
    if (!probe) die("cannot open model library " + path);
    try {
        return ffi::Module::LoadFromFile(path);
    } catch (const ffi::Error& e) {
        die("cannot load " + path + " as a TVM library: " + firstLine(e.what()));
    }
}

// The VM returns a tensor, or a tuple whose first field is the logits tensor.
ffi::Tensor firstTensor(const ffi::Any& out) {
    if (auto t = out.as<ffi::Tensor>()) return *t;
    if (auto arr = out.as<ffi::Array<ffi::Any>>()) {
        if (!arr->empty()) return firstTensor((*arr)[0]);
    }
    die("the model's main function did not return a tensor", 3);
}

// Print the first `valid` rows of a (batch, classes) logits tensor as samples first, first+1, ...
void printResults(const Options& o, const ffi::Tensor& out, int64_t first, int64_t valid,
                  const std::vector<std::string>& labels) {
    auto shape = out.shape();
    if (out.dtype().code != kDLFloat || out.dtype().bits != 32) die("expected float32 logits", 3);
    int64_t rows = shape.size() >= 2 ? shape[0] : 1;
    int64_t classes = out.numel() / std::max<int64_t>(rows, 1);
    const float* data = static_cast<const float*>(out.data_ptr());
    int k = static_cast<int>(std::min<int64_t>(o.topk, classes));
    for (int64_t n = 0; n < std::min(rows, valid); ++n) {
        const float* row = data + n * classes;
        if (o.logits) {
            std::printf("logits\t%lld", static_cast<long long>(first + n));
            for (int64_t c = 0; c < classes; ++c) std::printf("\t%.9g", row[c]);
            std::printf("\n");
        }
        float mx = *std::max_element(row, row + classes);
        double denom = 0.0;
        for (int64_t c = 0; c < classes; ++c) denom += std::exp(static_cast<double>(row[c] - mx));
        std::vector<int64_t> idx(static_cast<size_t>(classes));
        std::iota(idx.begin(), idx.end(), 0);
        std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [row](int64_t a, int64_t b) {
            return row[a] > row[b] || (row[a] == row[b] && a < b);
        });
        for (int r = 0; r < k; ++r) {
            int64_t c = idx[static_cast<size_t>(r)];
            double prob = std::exp(static_cast<double>(row[c] - mx)) / denom;
            const std::string name = c < static_cast<int64_t>(labels.size()) ? labels[static_cast<size_t>(c)] : "";
            std::printf("top\t%lld\t%d\t%lld\t%.9g\t%.6g\t%s\n", static_cast<long long>(first + n), r,
                        static_cast<long long>(c), row[c], prob, name.c_str());
        }
    }
}

// The first call: a shape/dtype the library was not compiled for is the user's input error.
ffi::Tensor runMain(const ffi::Function& mainFn, const ffi::Tensor& input) {
    try {
        return firstTensor(mainFn(input));
    } catch (const ffi::Error& e) {
        std::string msg = e.what();
        if (msg.find("loc=param") != std::string::npos) {
            die("the input does not fit the model (pass --shape as compiled): " + firstLine(msg));
        }
        throw;
    }
}

}  // namespace

int main(int argc, char** argv) {
    Options o = parseArgs(argc, argv);
    if (o.listVariants) {
        edgeres::listVariants(o.model);
        return 0;
    }
    std::string variant;
    std::string library = edgeres::selectLibrary(o.model, o.variant, &variant);
    const bool selftest = !o.selftest.empty();
    Golden golden;
    std::vector<float> host;
    int64_t samples = 0;
    std::vector<int64_t> shape;
    if (selftest) {
        golden = readGolden(o.selftest);
        host = golden.inputs;
        samples = golden.inputShape[0];
        shape = o.shape.empty() ? std::vector<int64_t>{1, golden.inputShape[1], golden.inputShape[2],
                                                        golden.inputShape[3]} : o.shape;
        if (!std::equal(shape.begin() + 1, shape.end(), golden.inputShape.begin() + 1)) {
            die("--shape does not match the golden inputs' C x H x W; pass the shape the library was compiled for");
        }
    } else {
        host = readFloats(o.input);
        shape = resolveShape(o, host.size(), &samples);
    }
    std::vector<std::string> labels = selftest ? std::vector<std::string>{} : readLabels(o);
    std::vector<float> collected;
    ffi::Module lib = loadLibrary(library);
    try {
        auto load = lib->GetFunction("vm_load_executable", true);
        if (!load) die(o.model + " is not a TVM Relax VM library (no vm_load_executable)");
        ffi::Module vm = (*load)().cast<ffi::Module>();
        auto init = vm->GetFunction("vm_initialization", true);
        auto mainFn = vm->GetFunction("main", true);
        if (!init || !mainFn) die(o.model + " has no Relax VM 'main' function");
        (*init)(static_cast<int>(kDLCPU), 0, kPooledAllocator);

        DLDevice cpu{kDLCPU, 0};
        ffi::Tensor input = ffi::Tensor::FromNDAlloc(CPUAlloc(), ffi::ShapeView(shape.data(), shape.size()),
                                                     DLDataType{kDLFloat, 32, 1}, cpu);
        float* dst = static_cast<float*>(input.data_ptr());
        const int64_t batch = shape[0];
        const int64_t per = shape[1] * shape[2] * shape[3];
        if (!variant.empty()) std::printf("# variant=%s library=%s\n", variant.c_str(), library.c_str());
        std::printf("# edgeres_tvm_classify model=%s shape=%lldx%lldx%lldx%lld samples=%lld\n", o.model.c_str(),
                    static_cast<long long>(shape[0]), static_cast<long long>(shape[1]),
                    static_cast<long long>(shape[2]), static_cast<long long>(shape[3]),
                    static_cast<long long>(samples));
        for (int64_t first = 0; first < samples; first += batch) {
            int64_t valid = std::min(batch, samples - first);
            std::copy(host.begin() + first * per, host.begin() + (first + valid) * per, dst);
            std::fill(dst + valid * per, dst + batch * per, 0.0f);
            ffi::Tensor out = runMain(*mainFn, input);
            if (selftest) {
                collectLogits(out, valid, &collected);
            } else {
                printResults(o, out, first, valid, labels);
            }
        }
        if (selftest) return reportSelftest(golden, collected);

        if (o.repeat > 0) {
            std::vector<double> ms;
            for (int i = 0; i < o.repeat; ++i) {
                auto t0 = std::chrono::steady_clock::now();
                ffi::Tensor again = firstTensor((*mainFn)(input));
                auto t1 = std::chrono::steady_clock::now();
                ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
            }
            std::sort(ms.begin(), ms.end());
            std::printf("latency_ms\t%.4f\t%.4f\t%d\n", ms[ms.size() / 2], ms.front(), o.repeat);
        }
    } catch (const ffi::Error& e) {
        die(std::string("TVM runtime: ") + firstLine(e.what()), 3);
    }
    return 0;
}
