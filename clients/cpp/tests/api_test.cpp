/* Tests of the C++ API (lars_api.h over liblars) against a real agent:
 *   api_test BASE_PORT MODID CMDID HOSTS BIG_MODID BIG_CMDID BIG_COUNT
 * HOSTS is IP:PORT,... of key (MODID, CMDID); key (BIG_MODID, BIG_CMDID)
 * has BIG_COUNT hosts. Prints each failure and `N passed, N failed`; exits
 * non-zero on any failure. */
#include "lars_api.h"

#include <atomic>
#include <chrono>
#include <iostream>
#include <set>
#include <sstream>
#include <thread>

namespace {

int passed = 0, failed = 0;

void expect(bool ok, const std::string &what)
{
    if (ok) {
        passed++;
    } else {
        failed++;
        std::cout << "FAIL: " << what << std::endl;
    }
}

std::string text(const std::string &ip, int port) { return ip + ":" + std::to_string(port); }

double ms_since(std::chrono::steady_clock::time_point t)
{
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count();
}

/* A UDP socket bound to an ephemeral loopback port: a "stalled agent". */
int silent_socket(int &port)
{
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        return -1;
    }
    port = ntohs(a.sin_port);
    return fd;
}

template <class E, class F> bool throws(F f)
{
    try {
        f();
    } catch (const E &) {
        return true;
    } catch (...) {
        return false;
    }
    return false;
}

} // namespace

int main(int argc, char **argv)
{
    if (argc != 8) {
        std::cerr << "usage: api_test BASE_PORT MODID CMDID HOSTS BIG_MODID BIG_CMDID BIG_COUNT" << std::endl;
        return 2;
    }
    int base = atoi(argv[1]), modid = atoi(argv[2]), cmdid = atoi(argv[3]);
    int big_modid = atoi(argv[5]), big_cmdid = atoi(argv[6]);
    size_t big_count = (size_t)atoi(argv[7]);
    std::set<std::string> hosts;
    {
        std::stringstream ss(argv[4]);
        std::string h;
        while (std::getline(ss, h, ',')) {
            hosts.insert(h);
        }
    }
    lars_client api("127.0.0.1", base, 3, 200);
    std::string ip;
    int port = 0;

    // An unknown key: NOEXIST from get_host, and from reg_init after its retries.
    expect(api.get_host(modid + 1000, cmdid, ip, port) == lars::RET_NOEXIST, "unknown key: NOEXIST");
    expect(api.reg_init(modid + 1000, cmdid) == lars::RET_NOEXIST, "unknown key: reg_init NOEXIST");

    // The key: reg_init, then hosts of the route, each of them in turn.
    expect(api.reg_init(modid, cmdid) == lars::RET_SUCC, "reg_init succeeds");
    std::map<std::string, int> seen;
    for (int i = 0; i < 30; i++) {
        int ret = api.get_host(modid, cmdid, ip, port);
        expect(ret == lars::RET_SUCC, "get_host succeeds, got " + std::to_string(ret));
        if (ret == lars::RET_SUCC) {
            expect(hosts.count(text(ip, port)) == 1, "get_host host in the route: " + text(ip, port));
            seen[text(ip, port)]++;
            expect(api.report_latency(modid, cmdid, ip, port, 0, 1) == lars::RET_SUCC, "report_latency sent");
            api.report(modid, cmdid, ip, port, 0);
        }
    }
    expect(seen.size() == hosts.size(), "every host returned: " + std::to_string(seen.size()));

    // get_route replaces the caller's route with exactly the hosts.
    route_set route(1, ip_port("junk", 1));
    expect(api.get_route(modid, cmdid, route) == lars::RET_SUCC, "get_route succeeds");
    std::set<std::string> got;
    for (route_set_it it = route.begin(); it != route.end(); ++it) {
        got.insert(text(it->first, it->second));
    }
    expect(got == hosts && route.size() == hosts.size(), "get_route lists the hosts");
    // A route larger than the first buffer (64 hosts).
    route.clear();
    expect(api.get_route(big_modid, big_cmdid, route) == lars::RET_SUCC, "big get_route succeeds");
    expect(route.size() == big_count, "big route has all hosts: " + std::to_string(route.size()));
    // An unknown key: an empty route, not an error.
    route.assign(2, ip_port("junk", 1));
    expect(api.get_route(modid + 1000, cmdid, route) == lars::RET_SUCC && route.empty(),
           "unknown key: empty route");

    // Bad input: a clear code at once, nothing sent.
    std::chrono::steady_clock::time_point t = std::chrono::steady_clock::now();
    expect(api.get_host(-1, cmdid, ip, port) == LARS_ERR_INVALID, "negative modid");
    expect(api.get_host(modid, -1, ip, port) == LARS_ERR_INVALID, "negative cmdid");
    expect(api.reg_init(-1, cmdid) == LARS_ERR_INVALID, "reg_init negative modid");
    expect(api.get_route(modid, -2, route) == LARS_ERR_INVALID, "get_route negative cmdid");
    expect(api.report_latency(modid, cmdid, "1.2.3", 80, 0, 1) == LARS_ERR_INVALID, "bad ip text");
    expect(api.report_latency(modid, cmdid, "1.2.3.4", 0, 0, 1) == LARS_ERR_INVALID, "port 0");
    expect(api.report_latency(modid, cmdid, "1.2.3.4", 70000, 0, 1) == LARS_ERR_INVALID, "port 70000");
    expect(api.report_latency(modid, cmdid, "1.2.3.4", 80, 2, 1) == LARS_ERR_INVALID, "retcode 2");
    api.report(modid, cmdid, "bad ip", 80, 0); // named on stderr, no crash
    expect(ms_since(t) < 200, "bad input does not wait for the network");
    expect(throws<std::invalid_argument>([] { lars_client c("1.2.3.999", 9000); }), "bad agent ip throws");
    expect(throws<std::invalid_argument>([] { lars_client c("127.0.0.1", 0); }), "base port 0 throws");
    expect(throws<std::invalid_argument>([] { lars_client c("127.0.0.1", 65535, 3); }), "ports past 65535 throw");
    expect(throws<std::invalid_argument>([] { lars_client c("127.0.0.1", 9000, 3, 0); }), "timeout 0 throws");
    expect(std::string(lars_client::strerror(LARS_ERR_TIMEOUT)).find("timeout") != std::string::npos,
           "strerror names the timeout");

    // A stalled agent: the timeout, not a hang.
    int stall_port = 0;
    int fd = silent_socket(stall_port);
    expect(fd >= 0, "silent socket");
    {
        lars_client stalled("127.0.0.1", stall_port, 1, 50);
        t = std::chrono::steady_clock::now();
        int ret = stalled.get_host(modid, cmdid, ip, port);
        double took = ms_since(t);
        expect(ret == LARS_ERR_TIMEOUT, "stalled agent: timeout, got " + std::to_string(ret));
        expect(took >= 45 && took < 2000, "stalled agent: waited the timeout: " + std::to_string(took));
        expect(stalled.get_route(modid, cmdid, route) == LARS_ERR_TIMEOUT, "stalled get_route: timeout");
    }
    close(fd);
    // Nothing listens: a socket error (ICMP port unreachable on loopback).
    {
        lars_client refused("127.0.0.1", stall_port, 1, 200);
        int ret = refused.get_host(modid, cmdid, ip, port);
        expect(ret == LARS_ERR_IO, "closed port: socket error, got " + std::to_string(ret));
    }

    // Moves hand the connection over; the moved-from client answers INVALID.
    {
        lars_client a("127.0.0.1", base, 3, 200);
        lars_client b(std::move(a));
        expect(b.get_host(modid, cmdid, ip, port) == lars::RET_SUCC, "moved-to client works");
        expect(a.get_host(modid, cmdid, ip, port) == LARS_ERR_INVALID, "moved-from client: INVALID");
        a = std::move(b);
        expect(a.get_host(modid, cmdid, ip, port) == lars::RET_SUCC, "move-assigned client works");
    }

    // One client shared by threads.
    {
        std::atomic<int> ok(0);
        std::vector<std::thread> pool;
        for (int i = 0; i < 4; i++) {
            pool.push_back(std::thread([&] {
                std::string tip;
                int tport = 0;
                for (int j = 0; j < 50; j++) {
                    if (api.get_host(modid, cmdid, tip, tport) == lars::RET_SUCC &&
                        hosts.count(text(tip, tport)) == 1) {
                        ok++;
                    }
                }
            }));
        }
        for (size_t i = 0; i < pool.size(); i++) {
            pool[i].join();
        }
        expect(ok.load() == 200, "shared client from 4 threads: " + std::to_string(ok.load()) + "/200");
    }

    // The original's default constructor, moved by the environment.
    setenv("LARS_AGENT_BASE_PORT", argv[1], 1);
    {
        lars_client dflt;
        expect(dflt.get_host(modid, cmdid, ip, port) == lars::RET_SUCC, "default client via LARS_AGENT_BASE_PORT");
    }

    std::cout << passed << " passed, " << failed << " failed" << std::endl;
    return failed == 0 ? 0 : 1;
}
