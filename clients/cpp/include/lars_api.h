/* lars_api.h: the C++ API of lars, a drop-in for the original Lars
 * `lars_api.h`. A program written against the original header compiles
 * unchanged and links with -llars (liblars.so or liblars.a, built by
 * `cargo build -p lars-capi`). Header-only: every method calls the C API of
 * lars.h, which speaks the agent's UDP protocol (one implementation, in Rust).
 *
 * Return codes: lars::RET_SUCC (0), RET_OVERLOAD (1), RET_SYSTEM_ERROR (2),
 * RET_NOEXIST (3) as the original, and lars's client errors (negative, see
 * lars.h): LARS_ERR_TIMEOUT (the agent did not answer within the timeout;
 * the original blocked forever), LARS_ERR_IO, LARS_ERR_INVALID (negative id,
 * bad ip text: nothing is sent). lars_client::strerror(code) names each.
 *
 * Thread safety: one lars_client may be shared by threads (requests to the
 * same agent port then wait for each other); for throughput give each
 * thread its own, as the original's qps tool did.
 */
#pragma once

/* What the original's header brought in through lars_reactor.h; programs
 * written against it rely on these. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <pthread.h>
#include <arpa/inet.h>
#include <string>
#include <vector>
#include <map>
#include <queue>
#include <utility>
#include <stdexcept>

#include "lars.h"

namespace lars {
/* The original's return codes (lars.proto's LarsRetCode). */
enum LarsRetCode {
    RET_SUCC = LARS_RET_SUCC,
    RET_OVERLOAD = LARS_RET_OVERLOAD,
    RET_SYSTEM_ERROR = LARS_RET_SYSTEM_ERROR,
    RET_NOEXIST = LARS_RET_NOEXIST,
};
} // namespace lars

typedef std::pair<std::string, int> ip_port;
typedef std::vector<ip_port> route_set;
typedef route_set::iterator route_set_it;

class lars_client
{
public:
    /* The original deployment: agent 127.0.0.1, UDP ports 8888..8890, and
     * (new) a 50 ms receive timeout. The environment may move it without a
     * rebuild: LARS_AGENT_IP, LARS_AGENT_BASE_PORT, LARS_AGENT_PORTS,
     * LARS_TIMEOUT_MS. Like the original, prints the problem and exits the
     * process when a value is bad or the sockets cannot be opened. */
    lars_client() : _client(NULL)
    {
        const char *ip = getenv("LARS_AGENT_IP");
        long base = env_number("LARS_AGENT_BASE_PORT", LARS_DEFAULT_BASE_PORT, 65535);
        long ports = env_number("LARS_AGENT_PORTS", LARS_DEFAULT_PORT_COUNT, 65535);
        long timeout = env_number("LARS_TIMEOUT_MS", LARS_DEFAULT_TIMEOUT_MS, 86400000L);
        int ret = lars_client_new(ip, (uint16_t)base, (uint16_t)ports, (uint32_t)timeout, &_client);
        if (ret != LARS_RET_SUCC) {
            fprintf(stderr, "lars_client: agent %s:%ld (%ld ports, timeout %ld ms): %s\n",
                    ip ? ip : "127.0.0.1", base, ports, timeout, lars_strerror(ret));
            exit(1);
        }
    }

    /* An agent elsewhere: its IPv4 address, first UDP port, number of ports
     * and receive timeout. Throws std::invalid_argument on a bad value and
     * std::runtime_error when the sockets cannot be opened. */
    lars_client(const std::string &agent_ip, int base_port, int port_count = LARS_DEFAULT_PORT_COUNT,
                int timeout_ms = (int)LARS_DEFAULT_TIMEOUT_MS)
        : _client(NULL)
    {
        if (base_port < 1 || base_port > 65535 || port_count < 1 || port_count > 65535 ||
            timeout_ms < 1) {
            throw std::invalid_argument("lars_client: base_port must be 1-65535, port_count and "
                                        "timeout_ms at least 1");
        }
        int ret = lars_client_new(agent_ip.c_str(), (uint16_t)base_port, (uint16_t)port_count,
                                  (uint32_t)timeout_ms, &_client);
        if (ret == LARS_ERR_INVALID) {
            throw std::invalid_argument("lars_client: invalid agent address " + agent_ip + ":" +
                                        std::to_string(base_port) + " (" +
                                        std::to_string(port_count) + " ports)");
        }
        if (ret != LARS_RET_SUCC) {
            throw std::runtime_error(std::string("lars_client: ") + lars_strerror(ret));
        }
    }

    ~lars_client() { lars_client_free(_client); }

    lars_client(const lars_client &) = delete;
    lars_client &operator=(const lars_client &) = delete;
    lars_client(lars_client &&other) noexcept : _client(other._client) { other._client = NULL; }
    lars_client &operator=(lars_client &&other) noexcept
    {
        if (this != &other) {
            lars_client_free(_client);
            _client = other._client;
            other._client = NULL;
        }
        return *this;
    }

    /* Registers (modid, cmdid) before first use (the original's: up to 3
     * get_route, 50 ms apart, until hosts come). RET_SUCC or RET_NOEXIST. */
    int reg_init(int modid, int cmdid) { return lars_reg_init(_client, modid, cmdid); }

    /* One host of (modid, cmdid) into ip and port. */
    int get_host(int modid, int cmdid, std::string &ip, int &port)
    {
        lars_host_t h;
        int ret = lars_get_host(_client, modid, cmdid, &h);
        if (ret == LARS_RET_SUCC) {
            ip = h.ip;
            port = h.port;
        }
        return ret;
    }

    /* Reports how a call to ip:port went: retcode 0 success, 1 failure.
     * Nothing is awaited; bad input is named on stderr (the original
     * perror'd). */
    void report(int modid, int cmdid, const std::string &ip, int port, int retcode)
    {
        int ret = lars_report(_client, modid, cmdid, ip.c_str(), port, retcode);
        if (ret != LARS_RET_SUCC) {
            fprintf(stderr, "lars_client::report(%d, %d, %s:%d, %d): %s\n", modid, cmdid,
                    ip.c_str(), port, retcode, lars_strerror(ret));
        }
    }

    /* report() with the call's latency in milliseconds (sent as the report's
     * timecost, at least 1). Returns RET_SUCC or the error. */
    int report_latency(int modid, int cmdid, const std::string &ip, int port, int retcode,
                       unsigned latency_ms)
    {
        return lars_report_latency(_client, modid, cmdid, ip.c_str(), port, retcode, latency_ms);
    }

    /* Every host of (modid, cmdid) into route (replaced). An empty route with
     * RET_SUCC means the agent does not know the key yet. */
    int get_route(int modid, int cmdid, route_set &route)
    {
        lars_host_t buf[64];
        size_t count = 0;
        int ret = lars_get_route(_client, modid, cmdid, buf, 64, &count);
        std::vector<lars_host_t> big;
        const lars_host_t *hosts = buf;
        if (ret == LARS_ERR_BUFFER) {
            big.resize(count);
            ret = lars_get_route(_client, modid, cmdid, big.data(), big.size(), &count);
            hosts = big.data();
            if (ret == LARS_ERR_BUFFER) { /* grew between the two calls */
                count = big.size();
                ret = LARS_RET_SUCC;
            }
        }
        if (ret != LARS_RET_SUCC) {
            return ret;
        }
        route.clear();
        for (size_t i = 0; i < count; i++) {
            route.push_back(ip_port(hosts[i].ip, hosts[i].port));
        }
        return LARS_RET_SUCC;
    }

    /* The C handle (lars.h), for the calls that return a code where this
     * class keeps the original's void (lars_report). */
    lars_client_t *handle() const { return _client; }

    /* A text for any return code of this class. */
    static const char *strerror(int code) { return lars_strerror(code); }

private:
    /* The number in environment variable `name` (1..max), else `dflt`;
     * exits on a bad value. */
    static long env_number(const char *name, long dflt, long max)
    {
        const char *v = getenv(name);
        if (v == NULL || *v == '\0') {
            return dflt;
        }
        char *end = NULL;
        long n = strtol(v, &end, 10);
        if (*end != '\0' || n < 1 || n > max) {
            fprintf(stderr, "lars_client: %s=%s: not a number 1-%ld\n", name, v, max);
            exit(1);
        }
        return n;
    }

    lars_client_t *_client;
};
