/* The conformance driver of the C/C++ client (issue 14):
 *   driver check --base-port P --ports 3 --timeout-ms 50 --modid M --cmdid C
 *          --hosts IP:PORT,... --report-host IP:PORT --stall-port S
 *   driver bench --base-port P --ports 3 --timeout-ms 50 --modid M --cmdid C --seconds N
 * Prints `CHECK <name> PASS|FAIL <detail>` per check (exit 0 only if all
 * passed), or `BENCH ops_per_sec <number>`. Uses the C++ API (lars_api.h). */
#include "lars_api.h"

#include <algorithm>
#include <chrono>
#include <iostream>
#include <set>
#include <sstream>

namespace {

typedef std::chrono::steady_clock clock_type;

double ms_since(clock_type::time_point t)
{
    return std::chrono::duration<double, std::milli>(clock_type::now() - t).count();
}

struct options {
    std::string mode;
    std::map<std::string, std::string> v;
    long num(const std::string &k, long dflt) const
    {
        std::map<std::string, std::string>::const_iterator it = v.find(k);
        if (it == v.end()) {
            return dflt;
        }
        char *end = NULL;
        long n = strtol(it->second.c_str(), &end, 10);
        if (it->second.empty() || *end != '\0') {
            throw std::invalid_argument(k + " " + it->second + ": not a number");
        }
        return n;
    }
    std::string str(const std::string &k) const
    {
        std::map<std::string, std::string>::const_iterator it = v.find(k);
        if (it == v.end()) {
            throw std::invalid_argument("missing " + k);
        }
        return it->second;
    }
};

std::vector<std::string> split(const std::string &s, char sep)
{
    std::vector<std::string> out;
    std::stringstream ss(s);
    std::string item;
    while (std::getline(ss, item, sep)) {
        if (!item.empty()) {
            out.push_back(item);
        }
    }
    return out;
}

/* "ip:port" into its parts; throws on bad text. */
ip_port parse_host(const std::string &s)
{
    size_t colon = s.rfind(':');
    if (colon == std::string::npos) {
        throw std::invalid_argument(s + ": not IP:PORT");
    }
    return ip_port(s.substr(0, colon), atoi(s.substr(colon + 1).c_str()));
}

std::string text(const ip_port &h) { return h.first + ":" + std::to_string(h.second); }

int failures = 0;

void check(const char *name, bool pass, const std::string &detail)
{
    std::cout << "CHECK " << name << (pass ? " PASS " : " FAIL ") << detail << std::endl;
    if (!pass) {
        failures++;
    }
}

std::string code_text(int ret)
{
    return std::to_string(ret) + " (" + lars_client::strerror(ret) + ")";
}

int run_check(const options &o)
{
    int base = (int)o.num("--base-port", 0), ports = (int)o.num("--ports", 3);
    int timeout = (int)o.num("--timeout-ms", 50), modid = (int)o.num("--modid", -1),
        cmdid = (int)o.num("--cmdid", -1), stall = (int)o.num("--stall-port", 0);
    std::vector<std::string> host_list = split(o.str("--hosts"), ',');
    std::set<std::string> hosts(host_list.begin(), host_list.end());
    ip_port report_host = parse_host(o.str("--report-host"));
    lars_client api("127.0.0.1", base, ports, timeout);

    /* 1. noexist_then_host */
    {
        std::string ip;
        int port = 0;
        int first = api.get_host(modid, cmdid, ip, port);
        int reg = api.reg_init(modid, cmdid);
        int then = api.get_host(modid, cmdid, ip, port);
        bool in = then == lars::RET_SUCC && hosts.count(ip + ":" + std::to_string(port)) == 1;
        check("noexist_then_host", first == lars::RET_NOEXIST && reg == lars::RET_SUCC && in,
              "first get_host " + code_text(first) + ", reg_init " + code_text(reg) +
                  ", then get_host " + code_text(then) +
                  (then == lars::RET_SUCC ? " " + ip + ":" + std::to_string(port) : ""));
    }
    /* 2. round_robin */
    {
        std::map<std::string, int> seen;
        int errors = 0;
        for (int i = 0; i < 30; i++) {
            std::string ip;
            int port = 0;
            int ret = api.get_host(modid, cmdid, ip, port);
            if (ret != lars::RET_SUCC) {
                errors++;
                continue;
            }
            seen[ip + ":" + std::to_string(port)]++;
            if (api.report_latency(modid, cmdid, ip, port, 0, 1) != lars::RET_SUCC) {
                errors++;
            }
        }
        bool pass = errors == 0;
        std::string detail;
        for (std::set<std::string>::const_iterator it = hosts.begin(); it != hosts.end(); ++it) {
            int n = seen.count(*it) ? seen[*it] : 0;
            pass = pass && n >= 6;
            detail += *it + "=" + std::to_string(n) + " ";
        }
        for (std::map<std::string, int>::const_iterator it = seen.begin(); it != seen.end(); ++it) {
            if (hosts.count(it->first) == 0) {
                pass = false;
                detail += "foreign " + it->first + "=" + std::to_string(it->second) + " ";
            }
        }
        check("round_robin", pass, detail + "errors=" + std::to_string(errors));
    }
    /* 3. report */
    {
        int bad = 0;
        for (int i = 0; i < 7; i++) {
            int ret = api.report_latency(modid, cmdid, report_host.first, report_host.second,
                                         i < 5 ? 0 : 1, 3);
            bad += ret != lars::RET_SUCC;
        }
        check("report", bad == 0,
              "5 successes and 2 failures for " + text(report_host) + " sent with latency 3 ms, " +
                  std::to_string(bad) + " send errors");
    }
    /* 4. get_route */
    {
        route_set route;
        int ret = api.get_route(modid, cmdid, route);
        std::set<std::string> got;
        for (route_set_it it = route.begin(); it != route.end(); ++it) {
            got.insert(text(*it));
        }
        std::string list;
        for (std::set<std::string>::const_iterator it = got.begin(); it != got.end(); ++it) {
            list += (list.empty() ? "" : ",") + *it;
        }
        check("get_route", ret == lars::RET_SUCC && got == hosts && route.size() == hosts.size(),
              "ret " + code_text(ret) + ", hosts [" + list + "]");
    }
    /* 5. timeout */
    {
        lars_client stalled("127.0.0.1", stall, ports, timeout);
        std::string ip;
        int port = 0;
        clock_type::time_point t = clock_type::now();
        int ret = stalled.get_host(modid, cmdid, ip, port);
        double took = ms_since(t);
        char buf[160];
        snprintf(buf, sizeof buf, "get_host %s after %.1f ms (limit %d ms)", code_text(ret).c_str(),
                 took, 2 * timeout);
        check("timeout", ret == LARS_ERR_TIMEOUT && took < 2.0 * timeout, buf);
    }
    /* 6. bad_input */
    {
        std::string ip;
        int port = 0;
        clock_type::time_point t = clock_type::now();
        int neg_mod = api.get_host(-1, cmdid, ip, port);
        int neg_cmd = api.get_host(modid, -1, ip, port);
        int neg_reg = api.reg_init(-1, -1);
        route_set route;
        int neg_route = api.get_route(modid, -7, route);
        int bad_ip = api.report_latency(modid, cmdid, "10.0.0.300", 80, 0, 1);
        int bad_ip2 = lars_report(api.handle(), modid, cmdid, "not-an-ip", 80, 0);
        double took = ms_since(t);
        bool threw = false;
        try {
            lars_client bad("999.1.1.1", base, ports, timeout);
        } catch (const std::invalid_argument &) {
            threw = true;
        }
        bool pass = neg_mod == LARS_ERR_INVALID && neg_cmd == LARS_ERR_INVALID &&
                    neg_reg == LARS_ERR_INVALID && neg_route == LARS_ERR_INVALID &&
                    bad_ip == LARS_ERR_INVALID && bad_ip2 == LARS_ERR_INVALID && threw &&
                    took < timeout;
        char buf[320];
        snprintf(buf, sizeof buf,
                 "negative modid %d, negative cmdid %d, reg_init %d, get_route %d, report ip "
                 "10.0.0.300 %d, not-an-ip %d (%s expected); bad agent ip %s; %.2f ms, no network wait",
                 neg_mod, neg_cmd, neg_reg, neg_route, bad_ip, bad_ip2, "-3 = invalid argument",
                 threw ? "throws std::invalid_argument" : "did not throw", took);
        check("bad_input", pass, buf);
    }
    return failures == 0 ? 0 : 1;
}

int run_bench(const options &o)
{
    int base = (int)o.num("--base-port", 0), ports = (int)o.num("--ports", 3);
    int timeout = (int)o.num("--timeout-ms", 50), modid = (int)o.num("--modid", -1),
        cmdid = (int)o.num("--cmdid", -1);
    long seconds = o.num("--seconds", 5);
    lars_client api("127.0.0.1", base, ports, timeout);
    api.reg_init(modid, cmdid);
    std::string ip;
    int port = 0;
    unsigned long long ops = 0, errors = 0;
    lars_client_t *c = api.handle();
    clock_type::time_point start = clock_type::now();
    clock_type::time_point end = start + std::chrono::seconds(seconds);
    while (clock_type::now() < end) {
        for (int i = 0; i < 64; i++) {
            if (api.get_host(modid, cmdid, ip, port) == lars::RET_SUCC &&
                lars_report(c, modid, cmdid, ip.c_str(), port, 0) == lars::RET_SUCC) {
                ops++;
            } else {
                errors++;
            }
        }
    }
    double secs = std::chrono::duration<double>(clock_type::now() - start).count();
    if (errors > 0) {
        std::cerr << "bench: " << errors << " failed get_host/report" << std::endl;
    }
    printf("BENCH ops_per_sec %.0f\n", secs > 0 ? (double)ops / secs : 0.0);
    return ops > 0 ? 0 : 1;
}

} // namespace

int main(int argc, char **argv)
{
    options o;
    if (argc < 2) {
        std::cerr << "usage: driver check|bench --base-port P ... (see clients/cpp/README.md)" << std::endl;
        return 2;
    }
    o.mode = argv[1];
    for (int i = 2; i + 1 < argc; i += 2) {
        o.v[argv[i]] = argv[i + 1];
    }
    try {
        if (o.mode == "check") {
            return run_check(o);
        }
        if (o.mode == "bench") {
            return run_bench(o);
        }
        std::cerr << "driver: unknown mode " << o.mode << " (check or bench)" << std::endl;
    } catch (const std::exception &e) {
        std::cerr << "driver: " << e.what() << std::endl;
    }
    return 2;
}
