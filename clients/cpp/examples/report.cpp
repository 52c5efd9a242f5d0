/* report [agent options] M C IP PORT 0|1 [LATENCY_MS] [--latency MS]:
 * like `lars report`. */
#include "common.h"

#include <math.h>

static int usage()
{
    std::cerr << "usage: report [--agent-ip IP] [--base-port PORT] [--ports N] [--timeout-ms MS] "
                 "MODID CMDID IP PORT 0|1 [LATENCY_MS] [--latency MS]"
              << std::endl;
    return 2;
}

int main(int argc, char **argv)
{
    agent_opts o;
    std::vector<std::string> all, args;
    if (!parse_agent_opts(argc, argv, o, all)) {
        return 2;
    }
    bool has_latency = false;
    double latency = 0.0;
    for (size_t i = 0; i < all.size(); i++) {
        std::string a = all[i];
        if (a == "--latency" || a == "--timecost-ms" || a.rfind("--latency=", 0) == 0 ||
            a.rfind("--timecost-ms=", 0) == 0) {
            std::string v;
            size_t eq = a.find('=');
            if (eq != std::string::npos) {
                v = a.substr(eq + 1);
            } else if (i + 1 < all.size()) {
                v = all[++i];
            } else {
                return usage();
            }
            if (has_latency || !parse_ms(v, latency)) {
                std::cerr << "error: latency " << v << ": not a non-negative number of milliseconds (given once)" << std::endl;
                return 2;
            }
            has_latency = true;
        } else {
            args.push_back(a);
        }
    }
    if (args.size() != 5 && args.size() != 6) {
        return usage();
    }
    int modid = 0, cmdid = 0;
    long port = 0, result = 0;
    struct in_addr addr;
    if (!parse_id(args[0], "modid", modid) || !parse_id(args[1], "cmdid", cmdid)) {
        return 2;
    }
    if (inet_pton(AF_INET, args[2].c_str(), &addr) != 1) {
        std::cerr << "error: ip " << args[2] << ": not an IPv4 address" << std::endl;
        return 2;
    }
    if (!parse_long(args[3], 1, 65535, port)) {
        std::cerr << "error: port " << args[3] << ": not a port 1-65535" << std::endl;
        return 2;
    }
    if (!parse_long(args[4], 0, 1, result)) {
        std::cerr << "error: result " << args[4] << ": 0 (success) or 1 (failure)" << std::endl;
        return 2;
    }
    if (args.size() == 6) {
        if (has_latency || !parse_ms(args[5], latency)) {
            std::cerr << "error: LATENCY_MS " << args[5] << ": not a non-negative number of milliseconds (given once)" << std::endl;
            return 2;
        }
        has_latency = true;
    }
    lars_client *api = open_client(o);
    if (api == NULL) {
        return 1;
    }
    /* The report is never answered; whether an agent listens shows here. */
    int ret = api->reg_init(modid, cmdid);
    if (ret == LARS_ERR_TIMEOUT || ret == LARS_ERR_IO) {
        std::cerr << "lars: no agent answered; nothing was reported: report modid " << modid
                  << ", cmdid " << cmdid << " (agent " << agent_addr(o, modid, cmdid)
                  << "): " << lars_client::strerror(ret) << std::endl;
        delete api;
        return 1;
    }
    if (ret != lars::RET_SUCC) {
        std::cerr << "modid " << modid << ", cmdid " << cmdid
                  << ": still no host after reg_init: " << lars_client::strerror(ret) << std::endl;
    }
    if (has_latency) {
        /* Whole milliseconds on the wire; a known latency is at least 1. */
        double whole = floor(latency);
        unsigned ms = whole >= 4294967295.0 ? 4294967295u : (unsigned)whole;
        ret = api->report_latency(modid, cmdid, args[2], (int)port, (int)result, ms);
    } else {
        ret = lars_report(api->handle(), modid, cmdid, args[2].c_str(), (int)port, (int)result);
    }
    delete api;
    if (ret != lars::RET_SUCC) {
        std::cerr << "lars: report modid " << modid << ", cmdid " << cmdid << " (agent "
                  << agent_addr(o, modid, cmdid) << "): " << lars_client::strerror(ret) << std::endl;
        return 1;
    }
    std::cout << "report sent: modid = " << modid << ", cmdid = " << cmdid << " | " << args[2]
              << ":" << port << " " << (result == 0 ? "success" : "failure")
              << " (UDP, not acknowledged)" << std::endl;
    return 0;
}
