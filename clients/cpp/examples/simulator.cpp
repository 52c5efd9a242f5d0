/* simulator [agent options] M C [ERR_RATE] [COUNT] [--interval-ms N] [--seed N]
 *   [--latency-ms MS] [--latency-sigma S] [--absence N] [-v|--verbose]
 * like `lars simulator`: call the service COUNT times through the agent, fail
 * each call with probability ERR_RATE, report every outcome with a drawn
 * (lognormal) latency, and print the tally per host and the overload
 * transitions seen from this side. The draws are those of `lars simulator`
 * (same generator and seed), so a seed repeats a run of either. */
#include "common.h"

#include <algorithm>
#include <math.h>
#include <stdint.h>
#include <time.h>

namespace {

struct splitmix64 {
    uint64_t s;
    uint64_t next()
    {
        s += 0x9E3779B97F4A7C15ULL;
        uint64_t z = s;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
        return z ^ (z >> 31);
    }
    double unit() { return (double)((next() >> 11) + 1) / (double)(1ULL << 53); }
    double normal()
    {
        double u1 = unit(), u2 = unit();
        return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
    }
};

const uint64_t LATENCY_STREAM = 0x6c6174656e637921ULL;
const double LATENCY_CAP_MS = 3600.0 * 1000.0;

/* Rust's `{}` for an f64: the shortest text that reads back the same. */
std::string shortest(double v)
{
    char buf[64];
    for (int p = 1; p <= 17; p++) {
        snprintf(buf, sizeof buf, "%.*g", p, v);
        if (strtod(buf, NULL) == v) {
            break;
        }
    }
    return buf;
}

/* Milliseconds for display: whole when whole, else to the microsecond. */
std::string ms_text(double ms)
{
    char buf[64];
    if (ms == floor(ms)) {
        snprintf(buf, sizeof buf, "%.0f", ms);
    } else {
        snprintf(buf, sizeof buf, "%.3f", ms);
    }
    return buf;
}

/* An error rate in tenths: "0.3" (a fraction) or "3" (tenths). */
bool parse_err_rate(const std::string &s, int &out)
{
    if (s.find('.') != std::string::npos) {
        double f = 0;
        if (!parse_ms(s, f)) {
            return false;
        }
        double t = f * 10.0;
        if (t < 0.0 || t > 10.0 || fabs(t - round(t)) > 1e-9) {
            return false;
        }
        out = (int)round(t);
        return true;
    }
    long v = 0;
    if (!parse_long(s, 0, 10, v)) {
        return false;
    }
    out = (int)v;
    return true;
}

struct host_key {
    uint32_t ip; /* host order, so the map sorts as lars's does */
    int port;
    bool operator<(const host_key &o) const { return ip < o.ip || (ip == o.ip && port < o.port); }
};

std::string host_text(const host_key &h)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%u.%u.%u.%u:%d", h.ip >> 24, (h.ip >> 16) & 255, (h.ip >> 8) & 255,
             h.ip & 255, h.port);
    return buf;
}

struct event {
    uint64_t at;
    std::string line;
};

int usage()
{
    std::cerr << "usage: simulator [--agent-ip IP] [--base-port PORT] [--ports N] [--timeout-ms MS] "
                 "MODID CMDID [ERR_RATE] [COUNT] [--interval-ms N] [--seed N] [--latency-ms MS] "
                 "[--latency-sigma S] [--absence N] [-v]"
              << std::endl;
    return 2;
}

} // namespace

int main(int argc, char **argv)
{
    agent_opts o;
    std::vector<std::string> all, args;
    if (!parse_agent_opts(argc, argv, o, all)) {
        return 2;
    }
    long interval_ms = 6, absence = 20;
    uint64_t seed = 0;
    bool has_seed = false, verbose = false;
    double latency_ms = 5.0, sigma = 0.5;
    for (size_t i = 0; i < all.size(); i++) {
        std::string a = all[i];
        if (a == "-v" || a == "--verbose") {
            verbose = true;
            continue;
        }
        if (a.rfind("--", 0) != 0 || a.size() == 2) {
            args.push_back(a);
            continue;
        }
        std::string name = a, v;
        size_t eq = a.find('=');
        if (eq != std::string::npos) {
            name = a.substr(0, eq);
            v = a.substr(eq + 1);
        } else if (i + 1 < all.size()) {
            v = all[++i];
        } else {
            return usage();
        }
        bool ok = true;
        if (name == "--interval-ms") {
            ok = parse_long(v, 0, 86400000, interval_ms);
        } else if (name == "--seed") {
            char *end = NULL;
            errno = 0;
            unsigned long long s = strtoull(v.c_str(), &end, 10);
            ok = !v.empty() && v[0] != '-' && errno == 0 && *end == '\0';
            seed = s;
            has_seed = true;
        } else if (name == "--latency-ms") {
            ok = parse_ms(v, latency_ms);
        } else if (name == "--latency-sigma") {
            char *end = NULL;
            sigma = strtod(v.c_str(), &end);
            ok = !v.empty() && *end == '\0' && isfinite(sigma) && sigma >= 0.0;
        } else if (name == "--absence") {
            ok = parse_long(v, 0, 2147483647L, absence);
        } else {
            std::cerr << "error: unknown option " << name << std::endl;
            return usage();
        }
        if (!ok) {
            std::cerr << "error: " << name << " " << v << ": invalid value" << std::endl;
            return 2;
        }
    }
    if (args.size() < 2 || args.size() > 4) {
        return usage();
    }
    int modid = 0, cmdid = 0, err_rate = 2;
    long count = 100;
    if (!parse_id(args[0], "modid", modid) || !parse_id(args[1], "cmdid", cmdid)) {
        return 2;
    }
    if (args.size() > 2 && !parse_err_rate(args[2], err_rate)) {
        std::cerr << "error: err_rate " << args[2]
                  << ": a fraction 0-1 in steps of 0.1 (0.3) or tenths 0-10 (3)" << std::endl;
        return 2;
    }
    if (args.size() > 3 && !parse_long(args[3], 0, 2147483647L, count)) {
        std::cerr << "error: count " << args[3] << ": not a number of queries" << std::endl;
        return 2;
    }
    if (!has_seed) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        seed = (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
    }
    bool latency_on = latency_ms > 0.0;

    lars_client *api = open_client(o);
    if (api == NULL) {
        return 1;
    }
    std::cout << "err_rate = " << err_rate << "/10, count = " << count << ", seed = " << seed
              << std::endl;
    if (latency_on) {
        std::cout << "latency: lognormal, median " << ms_text(latency_ms) << " ms, sigma "
                  << shortest(sigma)
                  << " (drawn per call, not measured; sent as the report's timecost)" << std::endl;
    } else {
        std::cout << "latency: off (reports carry no timecost)" << std::endl;
    }
    reg_init_noted(*api, modid, cmdid);

    splitmix64 rng = {seed}, latency_rng = {seed ^ LATENCY_STREAM};
    std::map<host_key, std::pair<uint64_t, uint64_t> > tally;
    std::map<host_key, uint64_t> last_seen;
    std::vector<event> events;
    std::vector<uint32_t> reported;
    uint64_t overload = 0, noexist = 0, system_err = 0, timeouts = 0, io = 0;
    bool overloaded = false;
    uint64_t threshold = absence < 1 ? 1 : (uint64_t)absence;
    for (uint64_t i = 0; i < (uint64_t)count; i++) {
        if (i > 0 && interval_ms > 0) {
            usleep((useconds_t)(interval_ms * 1000));
        }
        std::string ip;
        int port = 0;
        int ret = api->get_host(modid, cmdid, ip, port);
        if (ret == lars::RET_SUCC) {
            bool fail = rng.next() % 10 < (uint64_t)err_rate;
            double lat = 0.0;
            if (latency_on) {
                lat = sigma == 0.0 ? latency_ms : latency_ms * exp(sigma * latency_rng.normal());
                if (!(lat <= LATENCY_CAP_MS)) {
                    lat = LATENCY_CAP_MS;
                }
            }
            struct in_addr a;
            inet_pton(AF_INET, ip.c_str(), &a);
            host_key h = {ntohl(a.s_addr), port};
            if (overloaded) {
                overloaded = false;
                events.push_back(event{i, "  query " + std::to_string(i) +
                                              ": get_host returns a host again"});
            }
            std::map<host_key, uint64_t>::iterator seen = last_seen.find(h);
            if (seen != last_seen.end()) {
                uint64_t gap = i - seen->second - 1;
                if (gap >= threshold) {
                    events.push_back(event{seen->second + 1,
                                           "  queries " + std::to_string(seen->second + 1) + "..=" +
                                               std::to_string(i - 1) + ": " + host_text(h) +
                                               " not returned (" + std::to_string(gap) +
                                               " queries), then returned again"});
                }
                seen->second = i;
            } else {
                last_seen[h] = i;
            }
            if (fail) {
                tally[h].second++;
            } else {
                tally[h].first++;
            }
            int rr;
            uint32_t wire = 0;
            if (latency_on) {
                double whole = floor(lat);
                wire = whole >= 4294967295.0 ? 4294967295u : (uint32_t)whole;
                rr = api->report_latency(modid, cmdid, ip, port, fail ? 1 : 0, wire);
                if (wire == 0) {
                    wire = 1; /* a known latency travels as at least 1 ms */
                }
            } else {
                rr = lars_report(api->handle(), modid, cmdid, ip.c_str(), port, fail ? 1 : 0);
            }
            if (rr == lars::RET_SUCC) {
                if (latency_on) {
                    reported.push_back(wire);
                }
            } else {
                std::cerr << "report failed: " << lars_client::strerror(rr) << std::endl;
                io++;
            }
            if (verbose) {
                std::cout << i << ": host " << ip << ":" << port << " called "
                          << (fail ? "ERROR" : "SUCCESS");
                if (latency_on) {
                    std::cout << " in " << ms_text(round(lat * 1000.0) / 1000.0) << " ms";
                }
                std::cout << std::endl;
            }
            continue;
        }
        if (ret == lars::RET_OVERLOAD) {
            overload++;
            if (!overloaded) {
                overloaded = true;
                events.push_back(event{i, "  query " + std::to_string(i) +
                                              ": get_host answers OVERLOAD (every host overloaded)"});
            }
        } else if (ret == lars::RET_NOEXIST) {
            noexist++;
        } else if (ret == LARS_ERR_TIMEOUT) {
            timeouts++;
        } else if (ret == LARS_ERR_IO) {
            io++;
        } else {
            system_err++;
        }
        if (verbose) {
            if (ret == lars::RET_OVERLOAD) {
                std::cout << i << ": " << modid << "," << cmdid << " all hosts were overloaded" << std::endl;
            } else if (ret == lars::RET_NOEXIST) {
                std::cout << i << ": " << modid << "," << cmdid << " not exist" << std::endl;
            } else {
                std::cout << i << ": " << lars_client::strerror(ret) << std::endl;
            }
        }
    }
    delete api;
    for (std::map<host_key, uint64_t>::iterator it = last_seen.begin(); it != last_seen.end(); ++it) {
        uint64_t gap = (uint64_t)count - it->second - 1;
        if (gap >= threshold) {
            events.push_back(event{it->second + 1,
                                   "  queries " + std::to_string(it->second + 1) + "..=" +
                                       std::to_string(count - 1) + ": " + host_text(it->first) +
                                       " not returned (" + std::to_string(gap) +
                                       " queries), until the end"});
        }
    }
    std::stable_sort(events.begin(), events.end(),
                     [](const event &a, const event &b) { return a.at < b.at; });

    std::cout << "hosts:" << std::endl;
    for (std::map<host_key, std::pair<uint64_t, uint64_t> >::iterator it = tally.begin();
         it != tally.end(); ++it) {
        std::cout << "  " << host_text(it->first) << ": success: " << it->second.first
                  << "; error: " << it->second.second << std::endl;
    }
    std::cout << "answers without host: overload " << overload << ", noexist " << noexist
              << ", system " << system_err << ", timeout " << timeouts << ", socket errors " << io
              << std::endl;
    if (reported.empty()) {
        std::cout << "latency reported: none" << std::endl;
    } else {
        std::vector<uint32_t> v = reported;
        std::sort(v.begin(), v.end());
        size_t n = v.size();
        size_t r50 = (size_t)ceil(0.5 * (double)n), r99 = (size_t)ceil(0.99 * (double)n);
        uint32_t p50 = v[std::min(r50 == 0 ? 0 : r50 - 1, n - 1)];
        uint32_t p99 = v[std::min(r99 == 0 ? 0 : r99 - 1, n - 1)];
        std::cout << "latency reported: p50 " << p50 << " ms, p99 " << p99 << " ms (" << n
                  << " reports)" << std::endl;
    }
    std::cout << "overload transitions seen by this client (the agent logs its own):" << std::endl;
    if (events.empty()) {
        std::cout << "  none" << std::endl;
    }
    for (size_t i = 0; i < events.size(); i++) {
        std::cout << events[i].line << std::endl;
    }
    return 0;
}
