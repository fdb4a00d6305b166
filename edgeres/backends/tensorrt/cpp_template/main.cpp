// edgeres_trt_classify: classify an NCHW float32 tensor with a serialized TensorRT engine.
//
// Usage:
//   edgeres_trt_classify model.engine input.bin [--shape NxCxHxW] [--labels labels.txt]
//                        [--topk 5] [--dla-core N] [--version-compatible]
//
// input.bin holds raw little-endian float32 values in NCHW order, already preprocessed
// (resized, cropped, normalised) exactly as the bundle's manifest says. Without --shape the
// batch size N is inferred from the file size and the engine's C x H x W.
//
// TensorRT name-based I/O runtime API: createInferRuntime -> deserializeCudaEngine
// -> createExecutionContext -> setInputShape / setTensorAddress -> enqueueV3.
// Written for TensorRT 10 (JetPack 6.1+); the same calls exist in 8.6 and 11.

#include <NvInfer.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
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

std::vector<std::string> readLabels(std::string const& path) {
    std::vector<std::string> labels;
    std::ifstream f(path);
    std::string line;
    while (f && std::getline(f, line)) {
        if (!line.empty() && line.back() == '\r') {
            line.pop_back();
        }
        labels.push_back(line);
    }
    return labels;
}

int64_t volume(nvinfer1::Dims const& d) {
    int64_t v = 1;
    for (int32_t i = 0; i < d.nbDims; ++i) {
        v *= d.d[i];
    }
    return v;
}

std::string dirOf(std::string const& path) {
    auto pos = path.find_last_of('/');
    return pos == std::string::npos ? std::string(".") : path.substr(0, pos);
}

struct Args {
    std::string engine, input, labels, shape;
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
        } else if (s == "-h" || s == "--help") {
            std::cout << "usage: " << argv[0]
                      << " model.engine input.bin [--shape NxCxHxW] [--labels labels.txt] [--topk 5]"
                         " [--dla-core N] [--version-compatible]\n";
            std::exit(0);
        } else {
            pos.push_back(s);
        }
    }
    if (pos.size() != 2) {
        die("expected model.engine and input.bin (see --help)");
    }
    a.engine = pos[0];
    a.input = pos[1];
    if (a.labels.empty()) {
        a.labels = dirOf(a.engine) + "/labels.txt";
    }
    return a;
}

}  // namespace

int main(int argc, char** argv) {
    Args const args = parseArgs(argc, argv);
    Logger logger;

    std::unique_ptr<nvinfer1::IRuntime> runtime{nvinfer1::createInferRuntime(logger)};
    if (!runtime) {
        die("createInferRuntime failed", 3);
    }
    if (args.dlaCore >= 0) {
        runtime->setDLACore(args.dlaCore);  // the core a DLA engine runs on
    }
    if (args.versionCompatible) {
        runtime->setEngineHostCodeAllowed(true);  // version-compatible plans embed a lean runtime
    }
    std::vector<char> const plan = readFile(args.engine);
    std::unique_ptr<nvinfer1::ICudaEngine> engine{runtime->deserializeCudaEngine(plan.data(), plan.size())};
    if (!engine) {
        die("cannot deserialize " + args.engine +
            ": engines only load with the TensorRT version and GPU they were built for; rebuild it on this device");
    }
    std::unique_ptr<nvinfer1::IExecutionContext> context{engine->createExecutionContext()};
    if (!context) {
        die("createExecutionContext failed", 3);
    }

    std::string inputName;
    std::vector<std::string> outputNames;
    for (int32_t i = 0; i < engine->getNbIOTensors(); ++i) {
        char const* name = engine->getIOTensorName(i);
        if (engine->getTensorIOMode(name) == nvinfer1::TensorIOMode::kINPUT) {
            if (!inputName.empty()) {
                die("the engine has more than one input; this example feeds a single image tensor");
            }
            inputName = name;
        } else {
            outputNames.emplace_back(name);
        }
    }
    if (inputName.empty() || outputNames.empty()) {
        die("the engine needs one input and at least one output");
    }
    if (engine->getTensorDataType(inputName.c_str()) != nvinfer1::DataType::kFLOAT ||
        engine->getTensorDataType(outputNames[0].c_str()) != nvinfer1::DataType::kFLOAT) {
        die("this example expects float32 input and logits; rebuild the engine with float32 I/O");
    }

    std::vector<char> const raw = readFile(args.input);
    if (raw.size() % sizeof(float) != 0) {
        die(args.input + " is not a whole number of float32 values");
    }
    int64_t const numValues = static_cast<int64_t>(raw.size() / sizeof(float));

    nvinfer1::Dims const engineDims = engine->getTensorShape(inputName.c_str());
    if (engineDims.nbDims != 4) {
        die("the engine input is not 4-D NCHW");
    }
    std::vector<int64_t> shape;
    if (!args.shape.empty()) {
        shape = parseShape(args.shape);
    } else {
        int64_t perSample = 1;
        for (int32_t i = 1; i < 4; ++i) {
            if (engineDims.d[i] < 0) {
                die("the engine's C/H/W are dynamic; pass --shape NxCxHxW");
            }
            perSample *= engineDims.d[i];
        }
        if (numValues == 0 || numValues % perSample != 0) {
            die(args.input + " holds " + std::to_string(numValues) + " floats, not a multiple of C*H*W = " +
                std::to_string(perSample));
        }
        shape = {numValues / perSample, engineDims.d[1], engineDims.d[2], engineDims.d[3]};
    }
    if (shape[0] * shape[1] * shape[2] * shape[3] != numValues) {
        die("--shape does not match the size of " + args.input);
    }

    nvinfer1::Dims inDims{};
    inDims.nbDims = 4;
    for (int32_t i = 0; i < 4; ++i) {
        inDims.d[i] = static_cast<std::remove_reference_t<decltype(inDims.d[0])>>(shape[i]);  // int64 in TRT 10, int32 in 8.x
    }
    if (!context->setInputShape(inputName.c_str(), inDims)) {
        nvinfer1::Dims const maxDims =
            engine->getProfileShape(inputName.c_str(), 0, nvinfer1::OptProfileSelector::kMAX);
        die("input shape is outside the engine's optimization profile (max batch " +
            std::to_string(static_cast<long long>(maxDims.nbDims > 0 ? maxDims.d[0] : -1)) + ")");
    }

    cudaStream_t stream = nullptr;
    cudaCheck(cudaStreamCreate(&stream), "cudaStreamCreate");
    void* dInput = nullptr;
    cudaCheck(cudaMalloc(&dInput, raw.size()), "cudaMalloc(input)");
    cudaCheck(cudaMemcpyAsync(dInput, raw.data(), raw.size(), cudaMemcpyHostToDevice, stream), "cudaMemcpyAsync(H2D)");
    if (!context->setTensorAddress(inputName.c_str(), dInput)) {
        die("setTensorAddress(input) failed", 3);
    }

    // Every I/O tensor needs an address; only the first output (the logits) is read back.
    std::vector<void*> dOutputs;
    std::vector<nvinfer1::Dims> outDims;
    for (auto const& name : outputNames) {
        nvinfer1::Dims const d = context->getTensorShape(name.c_str());
        int64_t const elems = volume(d);
        if (elems < 0) {
            die("output " + name + " has an unresolved shape", 3);
        }
        size_t const bytes = static_cast<size_t>(std::max<int64_t>(elems, 1)) *
                             (engine->getTensorDataType(name.c_str()) == nvinfer1::DataType::kHALF ? 2 : 4);
        void* ptr = nullptr;
        cudaCheck(cudaMalloc(&ptr, bytes), "cudaMalloc(output)");
        if (!context->setTensorAddress(name.c_str(), ptr)) {
            die("setTensorAddress(" + name + ") failed", 3);
        }
        dOutputs.push_back(ptr);
        outDims.push_back(d);
    }

    if (!context->enqueueV3(stream)) {
        die("enqueueV3 failed", 3);
    }
    int64_t const batch = shape[0];
    int64_t const logitsCount = volume(outDims[0]);
    int64_t const numClasses = logitsCount / batch;
    std::vector<float> logits(static_cast<size_t>(logitsCount));
    cudaCheck(cudaMemcpyAsync(logits.data(), dOutputs[0], logits.size() * sizeof(float), cudaMemcpyDeviceToHost,
                              stream),
              "cudaMemcpyAsync(D2H)");
    cudaCheck(cudaStreamSynchronize(stream), "cudaStreamSynchronize");

    std::vector<std::string> const labels = readLabels(args.labels);
    int const k = static_cast<int>(std::min<int64_t>(args.topk, numClasses));
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

    for (void* p : dOutputs) {
        cudaFree(p);
    }
    cudaFree(dInput);
    cudaStreamDestroy(stream);
    return 0;
}
