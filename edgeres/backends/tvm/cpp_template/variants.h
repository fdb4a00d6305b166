// Variant selection for portable edgeres TVM bundles (target x86-64).
//
// A portable bundle holds one library per x86 ISA level (model.so = the most portable one,
// model.<level>.so the others) and model.variants, which lists them best first:
//   <name> TAB <library file> TAB <comma-separated /proc/cpuinfo flags the library needs>
// The runner loads the first variant whose flags this CPU has (from /proc/cpuinfo, the same
// source edgeres' Python runtime reads), or the variant named by --variant / EDGERES_TVM_VARIANT,
// refused with the flags it lacks instead of dying of SIGILL. A library without model.variants
// beside it is loaded as it is. EDGERES_CPUINFO names another cpuinfo file (tests fake CPUs).

#pragma once

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#if defined(__linux__) && defined(__x86_64__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace edgeres {

struct Variant {
    std::string name;
    std::string file;
    std::vector<std::string> flags;
};

[[noreturn]] inline void variantError(const std::string& msg) {
    std::cerr << "error: " << msg << "\n";
    std::exit(2);
}

inline std::string dirOf(const std::string& path) {
    auto slash = path.find_last_of('/');
    return slash == std::string::npos ? std::string() : path.substr(0, slash + 1);
}

// model.so -> model.variants (same folder)
inline std::string variantsFileFor(const std::string& library) {
    std::string dir = dirOf(library);
    std::string base = library.substr(dir.size());
    auto dot = base.find('.');
    return dir + (dot == std::string::npos ? base : base.substr(0, dot)) + ".variants";
}

inline std::vector<std::string> split(const std::string& text, char sep) {
    std::vector<std::string> parts;
    std::stringstream ss(text);
    std::string part;
    while (std::getline(ss, part, sep)) {
        if (!part.empty()) parts.push_back(part);
    }
    return parts;
}

// The "flags" line of /proc/cpuinfo (or $EDGERES_CPUINFO); empty when unknown.
inline std::set<std::string> cpuFlags() {
    const char* env = std::getenv("EDGERES_CPUINFO");
    std::ifstream f(env && *env ? env : "/proc/cpuinfo");
    std::string line;
    while (std::getline(f, line)) {
        if (line.rfind("flags", 0) == 0 && line.find(':') != std::string::npos) {
            std::set<std::string> flags;
            std::stringstream ss(line.substr(line.find(':') + 1));
            std::string flag;
            while (ss >> flag) flags.insert(flag);
            return flags;
        }
    }
    return {};
}

// Linux hands out the AMX tile state on request only; without it AMX code dies of SIGILL.
inline bool requestAmx() {
#if defined(__linux__) && defined(__x86_64__)
    return syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */) == 0;
#else
    return false;
#endif
}

inline std::vector<Variant> readVariants(const std::string& path) {
    std::ifstream f(path);
    std::vector<Variant> out;
    std::string line;
    while (std::getline(f, line)) {
        if (line.empty() || line[0] == '#') continue;
        std::vector<std::string> cols;
        std::stringstream ss(line);
        std::string col;
        while (std::getline(ss, col, '\t')) cols.push_back(col);
        if (cols.size() < 2) variantError(path + " is malformed (line: '" + line + "'); compile the bundle again");
        out.push_back({cols[0], cols[1], cols.size() > 2 ? split(cols[2], ',') : std::vector<std::string>{}});
    }
    if (out.empty()) variantError(path + " lists no variants; compile the bundle again");
    return out;
}

// The flags `v` needs that this CPU lacks ("amx tile state" when Linux refuses AMX).
inline std::vector<std::string> missingFlags(const Variant& v, const std::set<std::string>& have) {
    std::vector<std::string> missing;
    bool amx = false;
    for (const auto& flag : v.flags) {
        if (!have.count(flag)) missing.push_back(flag);
        if (flag == "amx_tile") amx = true;
    }
    if (missing.empty() && amx && !requestAmx()) missing.push_back("the AMX tile state (arch_prctl refused)");
    return missing;
}

inline std::string joined(const std::vector<std::string>& items) {
    std::string out;
    for (const auto& s : items) out += (out.empty() ? "" : ", ") + s;
    return out;
}

// The library to load for `model` and the chosen variant's name (empty: no variants file).
// `forced` (from --variant, else $EDGERES_TVM_VARIANT) picks one by name; a variant's own library
// given as `model` is that variant (checked, not replaced); model.so means "the best that runs".
inline std::string selectLibrary(const std::string& model, std::string forced, std::string* chosen) {
    std::string list = variantsFileFor(model);
    if (!std::ifstream(list)) {
        if (!forced.empty()) variantError(model + " has no variants (no " + list + "); drop --variant");
        return model;
    }
    std::vector<Variant> variants = readVariants(list);
    std::set<std::string> have = cpuFlags();
    std::vector<std::string> names;
    for (const auto& v : variants) names.push_back(v.name);
    if (forced.empty() && std::getenv("EDGERES_TVM_VARIANT")) forced = std::getenv("EDGERES_TVM_VARIANT");
    const std::string given = model.substr(dirOf(model).size());
    for (size_t i = 0; forced.empty() && i + 1 < variants.size(); ++i) {
        if (variants[i].file == given) forced = variants[i].name;
    }
    for (const auto& v : variants) {
        if (!forced.empty() && v.name != forced) continue;
        std::vector<std::string> missing = missingFlags(v, have);
        if (missing.empty()) {
            *chosen = v.name;
            return dirOf(model) + v.file;
        }
        if (!forced.empty()) {
            variantError("variant " + forced + " needs " + joined(missing) + ", which this CPU lacks; pick another of " +
                         joined(names) + " or unset EDGERES_TVM_VARIANT");
        }
    }
    if (!forced.empty()) variantError("no variant '" + forced + "' in " + list + "; it has " + joined(names));
    variantError("no variant in " + list + " runs on this CPU (the most portable, " + variants.back().name +
                 ", needs " + joined(missingFlags(variants.back(), have)) + ")");
}

// --list-variants: one line per variant, "variant <name> <file> runs|lacks <flags>", then the choice.
inline void listVariants(const std::string& model) {
    std::string list = variantsFileFor(model);
    if (!std::ifstream(list)) variantError(model + " has no variants (no " + list + ")");
    std::set<std::string> have = cpuFlags();
    for (const auto& v : readVariants(list)) {
        std::vector<std::string> missing = missingFlags(v, have);
        std::cout << "variant\t" << v.name << "\t" << v.file << "\t"
                  << (missing.empty() ? std::string("runs") : "lacks " + joined(missing)) << "\n";
    }
}

}  // namespace edgeres
