// edgeres_trt_classify: classify an NCHW float32 tensor with a serialized TensorRT engine, or check the
// engine against the bundle's golden self-test.
//
// Usage (from BUNDLE/cpp after `cmake --build build`):
//   ./build/edgeres_trt_classify ../artifact/model.engine input.bin [--shape NxCxHxW] [--labels FILE]
//                                [--topk 5] [--dla-core N] [--version-compatible]
//   ./build/edgeres_trt_classify ../artifact/model.engine --selftest ../golden [--dla-core N]
//
// input.bin holds raw little-endian float32 values in NCHW order, already preprocessed (resized,
// cropped, normalised) exactly as the bundle's manifest says. Without --shape the batch size N is
// inferred from the file size and the engine's C x H x W; batches larger than the engine's
// optimization profile run in chunks. Class names come from labels.txt beside the engine or in its
// parent directory (the bundle root), or --labels.
//
// --selftest runs the golden inputs edgeres recorded at compile time (golden/selftest.txt names the
// files, shapes and tolerances) and compares with the expected logits: every logit within atol,
// every sample's cosine >= min_cosine, no sample whose expected top-1 leads by more than 2*atol may
// change it. It prints one `selftest PASS|FAIL ...` line and exits 0 (PASS) or 1 (FAIL).
//
// TensorRT API families (chosen at compile time from NV_TENSORRT_MAJOR / NV_TENSORRT_MINOR):
//   8.0 - 8.4  (JetPack 4.6 - 5.0, e.g. Jetson Nano): binding indices, setBindingDimensions, enqueueV2
//   8.5 - 10.x, 11.x: name-based I/O: getNbIOTensors, setInputShape, setTensorAddress, enqueueV3
//   8.6+: setEngineHostCodeAllowed for version-compatible engines (--version-compatible)
// Exit status: 0 success (selftest PASS), 1 selftest FAIL, 2 bad arguments or input, 3 a runtime failure.

#include <NvInfer.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <memory>
#include <numeric>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#if NV_TENSORRT_MAJOR < 8
#error "edgeres_trt_classify needs TensorRT 8.0 or later (JetPack 4.6 or later)"
#endif
#if NV_TENSORRT_MAJOR > 8 || (NV_TENSORRT_MAJOR == 8 && NV_TENSORRT_MINOR >= 5)
#define EDGERES_TRT_NAMED_IO 1
#else
#define EDGERES_TRT_NAMED_IO 0
#endif
#if NV_TENSORRT_MAJOR > 8 || (NV_TENSORRT_MAJOR == 8 && NV_TENSORRT_MINOR >= 6)
#define EDGERES_TRT_HOST_CODE 1
#else
#define EDGERES_TRT_HOST_CODE 0
#endif

namespace {

class Logger : public nvinfer1::ILogger {
public:
    void log(Severity severity, char const* msg) noexcept override {
        if (severity <= Severity::kWARNING) {
            std::cerr << "[TensorRT] " << msg << "\n";
        }
    }
};

[[noreturn]] void die(std::string const& msg, int code = 2) {
    std::cerr << "error: " << msg << "\n";
    std::exit(code);
}

void cudaCheck(cudaError_t err, char const* what) {
    if (err != cudaSuccess) {
        die(std::string(what) + " failed: " + cudaGetErrorString(err), 3);
    }
}

std::vector<char> readFile(std::string const& path) {
    std::ifstream f(path, std::ios::binary | std::ios::ate);
    if (!f) {
        die("cannot open " + path);
    }
    std::streamsize const size = f.tellg();
    f.seekg(0, std::ios::beg);
    std::vector<char> buf(static_cast<size_t>(size));
    if (size > 0 && !f.read(buf.data(), size)) {
        die("cannot read " + path);
    }
    return buf;
}

std::vector<float> readFloats(std::string const& path) {
    std::vector<char> const raw = readFile(path);
    if (raw.empty() || raw.size() % sizeof(float) != 0) {
        die(path + " is not a whole number of float32 values");
    }
    std::vector<float> out(raw.size() / sizeof(float));
    std::copy(raw.begin(), raw.end(), reinterpret_cast<char*>(out.data()));
    return out;
}

std::vector<int64_t> parseShape(std::string const& s) {
    std::vector<int64_t> dims;
    std::stringstream ss(s);
    std::string part;
    while (std::getline(ss, part, 'x')) {
        char* end = nullptr;
        long long v = std::strtoll(part.c_str(), &end, 10);
        if (part.empty() || *end != '\0' || v <= 0) {
            die("--shape must look like 1x3x224x224, got " + s);
        }
        dims.push_back(v);
    }
    if (dims.size() != 4) {
        die("--shape needs 4 dimensions (NxCxHxW), got " + s);
    }
    return dims;
}

std::string dirOf(std::string const& path) {
    auto pos = path.find_last_of('/');
    return pos == std::string::npos ? std::string(".") : path.substr(0, pos);
}

// labels.txt beside the engine, else in its parent (a bundle keeps the engine in artifact/ and
// labels.txt at its root); an explicit --labels file must exist.
std::vector<std::string> readLabels(std::string const& explicitPath, std::string const& engine) {
    std::vector<std::string> candidates;
    if (!explicitPath.empty()) {
        candidates.push_back(explicitPath);
    } else {
        candidates = {dirOf(engine) + "/labels.txt", dirOf(engine) + "/../labels.txt"};
    }
    for (auto const& path : candidates) {
        std::ifstream f(path);
        if (!f) {
            continue;
        }
        std::vector<std::string> labels;
        std::string line;
        while (std::getline(f, line)) {
            if (!line.empty() && line.back() == '\r') {
                line.pop_back();
            }
            labels.push_back(line);
        }
        return labels;
    }
    if (!explicitPath.empty()) {
        die("cannot open labels file " + explicitPath);
    }
    std::cerr << "warning: no labels.txt beside " << engine << " or in its parent; printing class indices only\n";
    return {};
}

struct Args {
    std::string engine, input, labels, shape, selftest;
    int topk = 5;
    int dlaCore = -1;
    bool versionCompatible = false;
};

Args parseArgs(int argc, char** argv) {
    Args a;
    std::vector<std::string> pos;
    for (int i = 1; i < argc; ++i) {
        std::string s = argv[i];
        auto value = [&](char const* name) -> std::string {
            if (i + 1 >= argc) {
                die(std::string(name) + " needs a value");
            }
            return argv[++i];
        };
        if (s == "--shape") {
            a.shape = value("--shape");
        } else if (s == "--labels") {
            a.labels = value("--labels");
        } else if (s == "--topk") {
            a.topk = std::max(1, std::atoi(value("--topk").c_str()));
        } else if (s == "--dla-core") {
            a.dlaCore = std::atoi(value("--dla-core").c_str());
        } else if (s == "--version-compatible") {
            a.versionCompatible = true;
        } else if (s == "--selftest") {
            a.selftest = value("--selftest");
        } else if (s == "-h" || s == "--help") {
            std::cout << "usage: " << argv[0]
                      << " model.engine input.bin [--shape NxCxHxW] [--labels labels.txt] [--topk 5]"
                         " [--dla-core N] [--version-compatible]\n"
                      << "       " << argv[0] << " model.engine --selftest BUNDLE/golden [--dla-core N]\n";
            std::exit(0);
        } else if (!s.empty() && s[0] == '-') {
            die("unknown option " + s + " (see --help)");
        } else {
            pos.push_back(s);
        }
    }
    size_t const want = a.selftest.empty() ? 2 : 1;
    if (pos.size() != want) {
        die(a.selftest.empty() ? "expected model.engine and input.bin (see --help)"
                               : "--selftest takes model.engine only (the inputs come from the golden files)");
    }
    a.engine = pos[0];
    if (want == 2) {
        a.input = pos[1];
    }
    return a;
}

// ---- one engine, both TensorRT I/O API families ------------------------------------------------

template <typename T>
struct TrtDeleter {
    void operator()(T* p) const noexcept { delete p; }
};
template <typename T>
using TrtPtr = std::unique_ptr<T, TrtDeleter<T>>;

struct Tensor {
    std::string name;
    int32_t index = -1;  // binding index (TensorRT < 8.5)
    bool input = false;
    nvinfer1::DataType type = nvinfer1::DataType::kFLOAT;
};

int64_t volume(nvinfer1::Dims const& d) {
    int64_t v = 1;
    for (int32_t i = 0; i < d.nbDims; ++i) {
        v *= d.d[i];
    }
    return v;
}

class Engine {
public:
    Engine(std::string const& path, int dlaCore, bool versionCompatible) {
        runtime_.reset(nvinfer1::createInferRuntime(logger_));
        if (!runtime_) {
            die("createInferRuntime failed", 3);
        }
        if (dlaCore >= 0) {
            runtime_->setDLACore(dlaCore);  // the DLA core the engine was built for
        }
        if (versionCompatible) {
#if EDGERES_TRT_HOST_CODE
            runtime_->setEngineHostCodeAllowed(true);  // version-compatible plans embed a lean runtime
#else
            die("--version-compatible needs TensorRT 8.6 or later");
#endif
        }
        std::vector<char> const plan = readFile(path);
        engine_.reset(runtime_->deserializeCudaEngine(plan.data(), plan.size()));
        if (!engine_) {
            die("cannot deserialize " + path + " (TensorRT " + std::to_string(NV_TENSORRT_MAJOR) + "." +
                std::to_string(NV_TENSORRT_MINOR) + "): engines only load with the TensorRT version and GPU "
                "they were built with; rebuild it on this device with `edgeres build-engine BUNDLE`");
        }
        context_.reset(engine_->createExecutionContext());
        if (!context_) {
            die("createExecutionContext failed", 3);
        }
        listTensors();
        nvinfer1::Dims const d = engineShape(input_);
        if (d.nbDims != 4) {
            die("the engine input is not 4-D NCHW");
        }
        for (int32_t i = 1; i < 4; ++i) {
            if (d.d[i] < 0) {
                die("the engine's C/H/W are dynamic; this example needs a fixed image size");
            }
            chw_[i - 1] = d.d[i];
        }
        if (d.d[0] >= 0) {
            minBatch_ = maxBatch_ = d.d[0];  // static (e.g. DLA) engine: pad the last chunk
        } else {
            minBatch_ = profileBatch(nvinfer1::OptProfileSelector::kMIN);
            maxBatch_ = profileBatch(nvinfer1::OptProfileSelector::kMAX);
        }
        cudaCheck(cudaStreamCreate(&stream_), "cudaStreamCreate");
    }
    ~Engine() {
        if (stream_ != nullptr) {
            cudaStreamDestroy(stream_);
        }
    }
    Engine(Engine const&) = delete;
    Engine& operator=(Engine const&) = delete;

    int64_t sampleSize() const { return chw_[0] * chw_[1] * chw_[2]; }
    int64_t channels() const { return chw_[0]; }
    int64_t height() const { return chw_[1]; }
    int64_t width() const { return chw_[2]; }

    // logits for n samples (n * sampleSize() floats), in chunks the profile accepts
    std::vector<float> infer(float const* data, int64_t n, int64_t* numClasses) {
        std::vector<float> all;
        for (int64_t first = 0; first < n; first += maxBatch_) {
            int64_t const valid = std::min<int64_t>(maxBatch_, n - first);
            int64_t const batch = std::max<int64_t>(valid, minBatch_);
            std::vector<float> chunk(static_cast<size_t>(batch * sampleSize()), 0.0f);
            std::copy(data + first * sampleSize(), data + (first + valid) * sampleSize(), chunk.begin());
            std::vector<float> out = run(chunk, batch, numClasses);
            all.insert(all.end(), out.begin(), out.begin() + valid * *numClasses);
        }
        return all;
    }

private:
    void listTensors() {
#if EDGERES_TRT_NAMED_IO
        int32_t const count = engine_->getNbIOTensors();
#else
        int32_t const count = engine_->getNbBindings();
#endif
        numTensors_ = count;
        for (int32_t i = 0; i < count; ++i) {
            Tensor t;
#if EDGERES_TRT_NAMED_IO
            t.name = engine_->getIOTensorName(i);
            t.input = engine_->getTensorIOMode(t.name.c_str()) == nvinfer1::TensorIOMode::kINPUT;
            t.type = engine_->getTensorDataType(t.name.c_str());
#else
            t.index = i;
            t.name = engine_->getBindingName(i);
            t.input = engine_->bindingIsInput(i);
            t.type = engine_->getBindingDataType(i);
#endif
            if (t.input) {
                if (!input_.name.empty()) {
                    die("the engine has more than one input; this example feeds a single image tensor");
                }
                input_ = t;
            } else {
                outputs_.push_back(t);
            }
        }
        if (input_.name.empty() || outputs_.empty()) {
            die("the engine needs one input and at least one output");
        }
        if (input_.type != nvinfer1::DataType::kFLOAT || outputs_[0].type != nvinfer1::DataType::kFLOAT) {
            die("this example expects float32 input and logits; rebuild the engine with float32 I/O");
        }
    }

    nvinfer1::Dims engineShape(Tensor const& t) const {
#if EDGERES_TRT_NAMED_IO
        return engine_->getTensorShape(t.name.c_str());
#else
        return engine_->getBindingDimensions(t.index);
#endif
    }

    int64_t profileBatch(nvinfer1::OptProfileSelector which) const {
#if EDGERES_TRT_NAMED_IO
        nvinfer1::Dims const d = engine_->getProfileShape(input_.name.c_str(), 0, which);
#else
        nvinfer1::Dims const d = engine_->getProfileDimensions(input_.index, 0, which);
#endif
        if (d.nbDims < 1 || d.d[0] < 1) {
            die("the engine has a dynamic batch but no optimization profile", 3);
        }
        return d.d[0];
    }

    bool setInputShape(int64_t batch) {
        nvinfer1::Dims dims{};
        dims.nbDims = 4;
        using D = std::remove_reference_t<decltype(dims.d[0])>;  // int64 in TensorRT 10+, int32 before
        dims.d[0] = static_cast<D>(batch);
        for (int32_t i = 0; i < 3; ++i) {
            dims.d[i + 1] = static_cast<D>(chw_[i]);
        }
#if EDGERES_TRT_NAMED_IO
        return context_->setInputShape(input_.name.c_str(), dims);
#else
        return context_->setBindingDimensions(input_.index, dims);
#endif
    }

    nvinfer1::Dims outputShape(Tensor const& t) const {
#if EDGERES_TRT_NAMED_IO
        return context_->getTensorShape(t.name.c_str());
#else
        return context_->getBindingDimensions(t.index);
#endif
    }

    std::vector<float> run(std::vector<float> const& host, int64_t batch, int64_t* numClasses) {
        if (!setInputShape(batch)) {
            die("batch " + std::to_string(batch) + " is outside the engine's optimization profile", 3);
        }
        std::vector<void*> bindings(static_cast<size_t>(numTensors_), nullptr);  // enqueueV2 (TensorRT < 8.5)
        std::vector<void*> owned;
        auto bind = [&](Tensor const& t, size_t bytes) {
            void* ptr = nullptr;
            cudaCheck(cudaMalloc(&ptr, std::max<size_t>(bytes, 1)), "cudaMalloc");
            owned.push_back(ptr);
#if EDGERES_TRT_NAMED_IO
            if (!context_->setTensorAddress(t.name.c_str(), ptr)) {
                die("setTensorAddress(" + t.name + ") failed", 3);
            }
#else
            bindings[static_cast<size_t>(t.index)] = ptr;
#endif
            return ptr;
        };
        void* dIn = bind(input_, host.size() * sizeof(float));
        cudaCheck(cudaMemcpyAsync(dIn, host.data(), host.size() * sizeof(float), cudaMemcpyHostToDevice, stream_),
                  "cudaMemcpyAsync(H2D)");
        // every output needs an address; only the first (the logits) is read back
        void* dLogits = nullptr;
        int64_t logitsCount = 0;
        for (size_t i = 0; i < outputs_.size(); ++i) {
            int64_t const elems = volume(outputShape(outputs_[i]));
            if (elems < 0) {
                die("output " + outputs_[i].name + " has an unresolved shape", 3);
            }
            size_t const width = outputs_[i].type == nvinfer1::DataType::kHALF ? 2 : 4;
            void* ptr = bind(outputs_[i], static_cast<size_t>(elems) * width);
            if (i == 0) {
                dLogits = ptr;
                logitsCount = elems;
            }
        }
#if EDGERES_TRT_NAMED_IO
        bool const ok = context_->enqueueV3(stream_);
#else
        bool const ok = context_->enqueueV2(bindings.data(), stream_, nullptr);
#endif
        if (!ok) {
            die("TensorRT execution (enqueue) failed", 3);
        }
        std::vector<float> logits(static_cast<size_t>(logitsCount));
        cudaCheck(cudaMemcpyAsync(logits.data(), dLogits, logits.size() * sizeof(float), cudaMemcpyDeviceToHost,
                                  stream_),
                  "cudaMemcpyAsync(D2H)");
        cudaCheck(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
        for (void* p : owned) {
            cudaFree(p);
        }
        *numClasses = logitsCount / batch;
        return logits;
    }

    Logger logger_;
    TrtPtr<nvinfer1::IRuntime> runtime_;
    TrtPtr<nvinfer1::ICudaEngine> engine_;
    TrtPtr<nvinfer1::IExecutionContext> context_;
    Tensor input_;
    std::vector<Tensor> outputs_;
    int64_t chw_[3] = {0, 0, 0};
    int64_t minBatch_ = 1, maxBatch_ = 1;
    int32_t numTensors_ = 0;
    cudaStream_t stream_ = nullptr;
};

// ---- --selftest -------------------------------------------------------------------------------

struct Golden {
    std::vector<float> inputs, expected;
    int64_t samples = 0, c = 0, h = 0, w = 0, classes = 0;
    double atol = 0.0, minCosine = 1.0;
};

Golden readGolden(std::string const& dir) {
    std::ifstream f(dir + "/selftest.txt");
    if (!f) {
        die("cannot open " + dir + "/selftest.txt; pass the bundle's golden/ directory to --selftest");
    }
    Golden g;
    std::string line, inputsFile, expectedFile;
    int64_t rows = 0;
    while (std::getline(f, line)) {
        std::istringstream ss(line);
        std::string key;
        if (!(ss >> key) || key[0] == '#') {
            continue;
        }
        if (key == "inputs") {
            ss >> inputsFile >> g.samples >> g.c >> g.h >> g.w;
        } else if (key == "expected") {
            ss >> expectedFile >> rows >> g.classes;
        } else if (key == "atol") {
            ss >> g.atol;
        } else if (key == "min_cosine") {
            ss >> g.minCosine;
        }
        if (ss.fail()) {
            die("malformed line in " + dir + "/selftest.txt: " + line);
        }
    }
    if (inputsFile.empty() || expectedFile.empty() || g.classes <= 0 || rows != g.samples) {
        die(dir + "/selftest.txt lacks the inputs/expected records; recompile the bundle");
    }
    g.inputs = readFloats(dir + "/" + inputsFile);
    g.expected = readFloats(dir + "/" + expectedFile);
    if (static_cast<int64_t>(g.inputs.size()) != g.samples * g.c * g.h * g.w ||
        static_cast<int64_t>(g.expected.size()) != g.samples * g.classes) {
        die("the golden files in " + dir + " do not have the sizes selftest.txt records; recompile the bundle");
    }
    return g;
}

int selftest(Engine& engine, Golden const& g) {
    if (engine.channels() != g.c || engine.height() != g.h || engine.width() != g.w) {
        die("the engine's input is not the golden inputs' C x H x W; the engine and the bundle do not belong together");
    }
    int64_t k = 0;
    std::vector<float> const got = engine.infer(g.inputs.data(), g.samples, &k);
    if (k != g.classes) {
        std::printf("selftest\tFAIL\tthe engine gives %lld classes, the golden outputs %lld\n",
                    static_cast<long long>(k), static_cast<long long>(g.classes));
        return 1;
    }
    double maxErr = 0.0, minCos = 1.0;
    int64_t agree = 0, flips = 0;
    bool finite = true;
    for (int64_t i = 0; i < g.samples; ++i) {
        float const* a = got.data() + i * k;
        float const* e = g.expected.data() + i * k;
        double dot = 0.0, na = 0.0, ne = 0.0;
        int64_t ta = 0, te = 0;
        for (int64_t c = 0; c < k; ++c) {
            finite = finite && std::isfinite(a[c]);
            maxErr = std::max(maxErr, std::fabs(static_cast<double>(a[c]) - e[c]));
            dot += static_cast<double>(a[c]) * e[c];
            na += static_cast<double>(a[c]) * a[c];
            ne += static_cast<double>(e[c]) * e[c];
            ta = a[c] > a[ta] ? c : ta;
            te = e[c] > e[te] ? c : te;
        }
        minCos = std::min(minCos, dot / std::max(std::sqrt(na * ne), 1e-12));
        double second = -INFINITY;
        for (int64_t c = 0; c < k; ++c) {
            second = c == te ? second : std::max(second, static_cast<double>(e[c]));
        }
        if (ta == te) {
            ++agree;
        } else if (k > 1 && e[te] - second > 2.0 * g.atol) {
            ++flips;
        }
    }
    bool const pass = finite && maxErr <= g.atol && minCos >= g.minCosine && flips == 0;
    std::printf("selftest\t%s\tsamples=%lld\tmax_abs_err=%.6g\tatol=%.6g\ttop1=%lld/%lld\tdecisive_flips=%lld"
                "\tmin_cosine=%.8f\tlimit_cosine=%.8g%s\n",
                pass ? "PASS" : "FAIL", static_cast<long long>(g.samples), maxErr, g.atol,
                static_cast<long long>(agree), static_cast<long long>(g.samples), static_cast<long long>(flips),
                minCos, g.minCosine, finite ? "" : "\tnon-finite outputs");
    return pass ? 0 : 1;
}

void printTopK(std::vector<float> const& logits, int64_t batch, int64_t numClasses,
               std::vector<std::string> const& labels, int topk) {
    int const k = static_cast<int>(std::min<int64_t>(topk, numClasses));
    for (int64_t n = 0; n < batch; ++n) {
        float const* row = logits.data() + n * numClasses;
        float const maxLogit = *std::max_element(row, row + numClasses);
        double denom = 0.0;
        for (int64_t c = 0; c < numClasses; ++c) {
            denom += std::exp(static_cast<double>(row[c] - maxLogit));
        }
        std::vector<int64_t> idx(static_cast<size_t>(numClasses));
        std::iota(idx.begin(), idx.end(), 0);
        std::partial_sort(idx.begin(), idx.begin() + k, idx.end(),
                          [row](int64_t a, int64_t b) { return row[a] > row[b]; });
        std::cout << "sample " << n << ":\n";
        for (int r = 0; r < k; ++r) {
            int64_t const c = idx[static_cast<size_t>(r)];
            double const prob = std::exp(static_cast<double>(row[c] - maxLogit)) / denom;
            std::cout << "  " << (r + 1) << ". class " << c;
            if (c < static_cast<int64_t>(labels.size())) {
                std::cout << " (" << labels[static_cast<size_t>(c)] << ")";
            }
            std::cout << std::fixed << std::setprecision(6) << "  logit " << row[c] << "  prob " << prob << "\n";
        }
    }
}

}  // namespace

int main(int argc, char** argv) {
    Args const args = parseArgs(argc, argv);
    Engine engine(args.engine, args.dlaCore, args.versionCompatible);
    if (!args.selftest.empty()) {
        return selftest(engine, readGolden(args.selftest));
    }
    std::vector<float> const input = readFloats(args.input);
    int64_t const numValues = static_cast<int64_t>(input.size());
    int64_t batch = numValues / engine.sampleSize();
    if (!args.shape.empty()) {
        std::vector<int64_t> const shape = parseShape(args.shape);
        if (shape[1] != engine.channels() || shape[2] != engine.height() || shape[3] != engine.width()) {
            die("--shape does not match the engine's C x H x W");
        }
        batch = shape[0];
    }
    if (batch * engine.sampleSize() != numValues) {
        die(args.input + " holds " + std::to_string(numValues) + " floats, not a whole number of C*H*W = " +
            std::to_string(engine.sampleSize()) + " samples (or not the --shape given)");
    }
    int64_t numClasses = 0;
    std::vector<float> const logits = engine.infer(input.data(), batch, &numClasses);
    printTopK(logits, batch, numClasses, readLabels(args.labels, args.engine), args.topk);
    return 0;
}
