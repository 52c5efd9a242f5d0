/* Shared by the example programs: the agent options of `lars`
 * (--agent-ip IP, --base-port PORT, --ports N, --timeout-ms MS, anywhere on
 * the command line) and strict number parsing. */
#pragma once

#include "lars_api.h"

#include <errno.h>
#include <iostream>
#include <string>
#include <vector>

struct agent_opts {
    std::string agent_ip = "127.0.0.1";
    int base_port = LARS_DEFAULT_BASE_PORT;
    int ports = LARS_DEFAULT_PORT_COUNT;
    int timeout_ms = LARS_DEFAULT_TIMEOUT_MS;
};

/* A whole number in [lo, hi], or false. */
inline bool parse_long(const std::string &s, long lo, long hi, long &out)
{
    if (s.empty()) {
        return false;
    }
    char *end = NULL;
    errno = 0;
    long v = strtol(s.c_str(), &end, 10);
    if (errno != 0 || *end != '\0' || v < lo || v > hi) {
        return false;
    }
    out = v;
    return true;
}

/* A non-negative number of milliseconds (fractions allowed), or false. */
inline bool parse_ms(const std::string &s, double &out)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(s.c_str(), &end);
    if (s.empty() || errno != 0 || *end != '\0' || !(v >= 0.0) || v > 1e12) {
        return false;
    }
    out = v;
    return true;
}

/* Takes the agent options out of argv; the rest, in order, into args.
 * Other --options are kept in args for the program to read. Prints the
 * problem and returns false on a bad value. */
inline bool parse_agent_opts(int argc, char **argv, agent_opts &opts,
                             std::vector<std::string> &args)
{
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        if (a == "--") { /* the rest is positional (e.g. a negative id) */
            for (i++; i < argc; i++) {
                args.push_back(argv[i]);
            }
            break;
        }
        std::string name = a, value;
        bool inline_value = false;
        size_t eq = a.find('=');
        if (a.rfind("--", 0) == 0 && eq != std::string::npos) {
            name = a.substr(0, eq);
            value = a.substr(eq + 1);
            inline_value = true;
        }
        if (name != "--agent-ip" && name != "--base-port" && name != "--ports" &&
            name != "--timeout-ms") {
            args.push_back(a);
            continue;
        }
        if (!inline_value) {
            if (i + 1 >= argc) {
                std::cerr << "error: " << name << " needs a value" << std::endl;
                return false;
            }
            value = argv[++i];
        }
        long v = 0;
        if (name == "--agent-ip") {
            struct in_addr addr;
            if (inet_pton(AF_INET, value.c_str(), &addr) != 1) {
                std::cerr << "error: --agent-ip " << value << ": not an IPv4 address" << std::endl;
                return false;
            }
            opts.agent_ip = value;
        } else if (name == "--base-port") {
            if (!parse_long(value, 1, 65535, v)) {
                std::cerr << "error: --base-port " << value << ": not a port 1-65535" << std::endl;
                return false;
            }
            opts.base_port = (int)v;
        } else if (name == "--ports") {
            if (!parse_long(value, 1, 65535, v)) {
                std::cerr << "error: --ports " << value << ": not a count 1-65535" << std::endl;
                return false;
            }
            opts.ports = (int)v;
        } else {
            if (!parse_long(value, 1, 86400000, v)) {
                std::cerr << "error: --timeout-ms " << value << ": not a timeout 1-86400000" << std::endl;
                return false;
            }
            opts.timeout_ms = (int)v;
        }
    }
    return true;
}

/* The agent address serving (modid, cmdid), for error lines. */
inline std::string agent_addr(const agent_opts &o, long modid, long cmdid)
{
    long port = o.base_port + (modid + cmdid) % o.ports;
    return o.agent_ip + ":" + std::to_string(port);
}

/* A module or command id (0 .. 2^31-1: the wire carries int32). */
inline bool parse_id(const std::string &s, const char *what, int &out)
{
    long v = 0;
    if (!parse_long(s, 0, 2147483647L, v)) {
        std::cerr << "error: " << what << " " << s << ": not an id 0-2147483647" << std::endl;
        return false;
    }
    out = (int)v;
    return true;
}

/* Opens the client, or prints why not. */
inline lars_client *open_client(const agent_opts &o)
{
    try {
        return new lars_client(o.agent_ip, o.base_port, o.ports, o.timeout_ms);
    } catch (const std::exception &e) {
        std::cerr << "lars: " << e.what() << std::endl;
        return NULL;
    }
}

/* reg_init like the lars tools: a failure is noted on stderr. */
inline int reg_init_noted(lars_client &api, int modid, int cmdid)
{
    int ret = api.reg_init(modid, cmdid);
    if (ret != lars::RET_SUCC) {
        std::cerr << "modid " << modid << ", cmdid " << cmdid
                  << ": still no host after reg_init: " << lars_client::strerror(ret) << std::endl;
    }
    return ret;
}

/* The command line of a one-key command (`get_host`, `get_route`): agent
 * options, then MODID CMDID. Prints the usage and returns false when it is
 * not that. */
inline bool parse_key_command(int argc, char **argv, const char *name, agent_opts &o,
                              int &modid, int &cmdid)
{
    std::vector<std::string> args;
    if (!parse_agent_opts(argc, argv, o, args)) {
        return false;
    }
    if (args.size() != 2) {
        std::cerr << "usage: " << name
                  << " [--agent-ip IP] [--base-port PORT] [--ports N] "
                     "[--timeout-ms MS] MODID CMDID"
                  << std::endl;
        return false;
    }
    return parse_id(args[0], "modid", modid) && parse_id(args[1], "cmdid", cmdid);
}
