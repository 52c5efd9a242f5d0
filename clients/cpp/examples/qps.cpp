/* qps [agent options] THREADS [--duration S] [--per-thread]: like `lars qps`.
 * Thread i owns a lars_client, uses key (i+1, 1), calls reg_init once, then
 * loops get_host and, on success, report(success). RET_SUCC, RET_OVERLOAD and
 * RET_NOEXIST count as answered (the original's legal returns; the last two
 * also as "no host"); anything else is an error. Then the same threads and
 * port mapping run raw UDP request/response against an in-process server
 * that answers every datagram with a pre-encoded GetHostResponse: the floor
 * any agent is measured against. */
#include "common.h"

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <thread>

namespace {

typedef std::chrono::steady_clock clock_type;

struct summary {
    size_t threads;
    uint64_t answered, errors, no_host;
    double elapsed;
    double average() const { return elapsed > 0 ? (double)answered / elapsed : 0.0; }
};

enum step_result { ANSWERED, NO_HOST, FAILED };

/* Runs `threads` loops of `step` (after `init` in each) for `seconds`,
 * printing a line per full second. */
summary drive(const char *label, size_t threads, long seconds, bool per_thread,
              const std::function<void(size_t)> &init,
              const std::function<step_result(size_t)> &step)
{
    std::unique_ptr<std::atomic<uint64_t>[]> answered(new std::atomic<uint64_t>[threads]);
    for (size_t i = 0; i < threads; i++) {
        answered[i] = 0;
    }
    std::atomic<uint64_t> errors(0), no_host(0);
    std::atomic<size_t> ready(0);
    std::atomic<bool> go(false), stop(false);
    std::vector<std::thread> pool;
    for (size_t i = 0; i < threads; i++) {
        pool.push_back(std::thread([&, i]() {
            init(i);
            ready++;
            while (!go.load()) {
                std::this_thread::yield();
            }
            while (!stop.load(std::memory_order_relaxed)) {
                switch (step(i)) {
                case ANSWERED:
                    answered[i].fetch_add(1, std::memory_order_relaxed);
                    break;
                case NO_HOST:
                    no_host.fetch_add(1, std::memory_order_relaxed);
                    answered[i].fetch_add(1, std::memory_order_relaxed);
                    break;
                case FAILED:
                    errors.fetch_add(1, std::memory_order_relaxed);
                    break;
                }
            }
        }));
    }
    while (ready.load() < threads) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    go = true;
    clock_type::time_point start = clock_type::now();
    clock_type::time_point end = start + std::chrono::seconds(seconds);
    std::vector<uint64_t> prev(threads, 0);
    for (long index = 1; index <= seconds; index++) {
        std::this_thread::sleep_until(start + std::chrono::seconds(index));
        uint64_t total = 0;
        std::vector<uint64_t> now(threads);
        for (size_t i = 0; i < threads; i++) {
            now[i] = answered[i].load(std::memory_order_relaxed);
            total += now[i] - prev[i];
        }
        char line[64];
        snprintf(line, sizeof line, "%s [%3lds] qps = %llu", label, index, (unsigned long long)total);
        std::cout << line << std::endl;
        if (per_thread) {
            for (size_t i = 0; i < threads; i++) {
                std::cout << "  thread:[" << i << "] --> qps = [" << now[i] - prev[i] << "]" << std::endl;
            }
        }
        prev = now;
    }
    std::this_thread::sleep_until(end);
    stop = true;
    double elapsed = std::chrono::duration<double>(clock_type::now() - start).count();
    for (size_t i = 0; i < pool.size(); i++) {
        pool[i].join();
    }
    summary s = {threads, 0, errors.load(), no_host.load(), elapsed};
    for (size_t i = 0; i < threads; i++) {
        s.answered += answered[i].load();
    }
    return s;
}

void varint(std::string &out, uint64_t v)
{
    while (v >= 0x80) {
        out.push_back((char)(v | 0x80));
        v >>= 7;
    }
    out.push_back((char)v);
}

/* One frame: msgid and body length (i32, little endian), then the body. */
std::string frame(int32_t msgid, const std::string &body)
{
    std::string out;
    uint32_t id = (uint32_t)msgid, len = (uint32_t)body.size();
    for (int i = 0; i < 4; i++) {
        out.push_back((char)((id >> (8 * i)) & 255));
    }
    for (int i = 0; i < 4; i++) {
        out.push_back((char)((len >> (8 * i)) & 255));
    }
    return out + body;
}

const uint32_t REFERENCE_SEQ = 1000000;

std::string reference_request(int modid, int cmdid)
{
    std::string b;
    b.push_back(0x08), varint(b, REFERENCE_SEQ);
    b.push_back(0x10), varint(b, (uint64_t)modid);
    b.push_back(0x18), varint(b, (uint64_t)cmdid);
    return frame(4, b); /* ID_GetHostRequest */
}

std::string reference_reply()
{
    std::string host, b;
    host.push_back(0x08), varint(host, 0x7f000001), host.push_back(0x10), varint(host, 9000);
    b.push_back(0x08), varint(b, REFERENCE_SEQ);
    b.push_back(0x10), varint(b, 1);
    b.push_back(0x18), varint(b, 1);
    b.push_back(0x2a), varint(b, host.size()), b += host;
    return frame(5, b); /* ID_GetHostResponse */
}

int udp_socket(int timeout_ms)
{
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -1;
    }
    struct timeval tv;
    tv.tv_sec = timeout_ms / 1000;
    tv.tv_usec = (timeout_ms % 1000) * 1000;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

void print_summary(const char *label, const summary &s)
{
    char line[256];
    snprintf(line, sizeof line,
             "%s: %zu threads, %.2fs: average %.0f req/s (answered %llu, no host %llu, errors %llu)",
             label, s.threads, s.elapsed, s.average(), (unsigned long long)s.answered,
             (unsigned long long)s.no_host, (unsigned long long)s.errors);
    std::cout << line << std::endl;
}

int usage()
{
    std::cerr << "usage: qps [--agent-ip IP] [--base-port PORT] [--ports N] [--timeout-ms MS] "
                 "THREADS [--duration S] [--per-thread]"
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
    long duration = 10, threads = 0;
    bool per_thread = false;
    for (size_t i = 0; i < all.size(); i++) {
        std::string a = all[i];
        if (a == "--per-thread") {
            per_thread = true;
        } else if (a == "--duration" || a.rfind("--duration=", 0) == 0) {
            std::string v;
            if (a.size() > 10) {
                v = a.substr(11);
            } else if (i + 1 < all.size()) {
                v = all[++i];
            }
            if (!parse_long(v, 1, 31536000L, duration)) {
                std::cerr << "error: --duration " << v << ": seconds, 1 or more" << std::endl;
                return 2;
            }
        } else if (a.rfind("--", 0) == 0) {
            std::cerr << "error: unknown option " << a << std::endl;
            return usage();
        } else {
            args.push_back(a);
        }
    }
    if (args.size() != 1) {
        return usage();
    }
    if (!parse_long(args[0], 1, 65535, threads)) {
        std::cerr << "error: THREADS " << args[0] << ": 1-65535" << std::endl;
        return 2;
    }
    size_t n = (size_t)threads;
    std::vector<std::unique_ptr<lars_client> > clients;
    for (size_t i = 0; i < n; i++) {
        lars_client *c = open_client(o);
        if (c == NULL) {
            std::cerr << "lars: cannot start the qps clients" << std::endl;
            return 1;
        }
        clients.push_back(std::unique_ptr<lars_client>(c));
    }
    std::cout << "lars qps: " << n << " threads for " << duration << "s against the agent at "
              << o.agent_ip << ":" << o.base_port << ".." << std::endl;
    summary lars_sum = drive(
        "lars", n, duration, per_thread,
        [&](size_t i) { clients[i]->reg_init((int)i + 1, 1); },
        [&](size_t i) {
            std::string ip;
            int port = 0;
            int ret = clients[i]->get_host((int)i + 1, 1, ip, port);
            if (ret == lars::RET_SUCC) {
                int rr = lars_report(clients[i]->handle(), (int)i + 1, 1, ip.c_str(), port, 0);
                return rr == lars::RET_SUCC ? ANSWERED : FAILED;
            }
            if (ret == lars::RET_OVERLOAD || ret == lars::RET_NOEXIST) {
                return NO_HOST;
            }
            return FAILED;
        });
    clients.clear();

    std::cout << "reference: raw UDP request/response, in-process server, same threads and duration"
              << std::endl;
    std::vector<int> servers, socks;
    std::vector<struct sockaddr_in> addrs;
    for (int p = 0; p < o.ports; p++) {
        int fd = udp_socket(50);
        struct sockaddr_in a;
        socklen_t len = sizeof a;
        if (fd < 0 || getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
            std::cerr << "lars: cannot start the raw UDP reference: " << ::strerror(errno) << std::endl;
            return 1;
        }
        servers.push_back(fd);
        addrs.push_back(a);
    }
    std::vector<std::string> requests;
    for (size_t i = 0; i < n; i++) {
        int modid = (int)i + 1;
        int fd = udp_socket(o.timeout_ms);
        const struct sockaddr_in &to = addrs[(size_t)((modid + 1) % o.ports)];
        if (fd < 0 || connect(fd, (const struct sockaddr *)&to, sizeof to) != 0) {
            std::cerr << "lars: cannot start the raw UDP reference: " << ::strerror(errno) << std::endl;
            return 1;
        }
        socks.push_back(fd);
        requests.push_back(reference_request(modid, 1));
    }
    const std::string reply = reference_reply();
    std::atomic<bool> stop_servers(false);
    std::vector<std::thread> server_threads;
    for (size_t s = 0; s < servers.size(); s++) {
        int fd = servers[s];
        server_threads.push_back(std::thread([fd, &reply, &stop_servers]() {
            char buf[1500];
            while (!stop_servers.load(std::memory_order_relaxed)) {
                struct sockaddr_in from;
                socklen_t len = sizeof from;
                ssize_t r = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &len);
                if (r >= 0) {
                    sendto(fd, reply.data(), reply.size(), 0, (struct sockaddr *)&from, len);
                }
            }
        }));
    }
    summary raw = drive(
        "raw", n, duration, per_thread, [](size_t) {},
        [&](size_t i) {
            char buf[1500];
            if (send(socks[i], requests[i].data(), requests[i].size(), 0) < 0 ||
                recv(socks[i], buf, sizeof buf, 0) < 0) {
                return FAILED;
            }
            return ANSWERED;
        });
    stop_servers = true;
    for (size_t s = 0; s < server_threads.size(); s++) {
        server_threads[s].join();
        close(servers[s]);
    }
    for (size_t i = 0; i < socks.size(); i++) {
        close(socks[i]);
    }
    print_summary("lars", lars_sum);
    print_summary("raw", raw);
    if (lars_sum.no_host > 0) {
        std::cout << lars_sum.no_host
                  << " answers had no host: thread i asks for key (i+1, 1); does each route exist?"
                  << std::endl;
    }
    if (lars_sum.answered == 0) {
        std::cout << "lars answered nothing: is the agent running at these ports?" << std::endl;
    }
    if (raw.average() > 0.0) {
        char line[64];
        snprintf(line, sizeof line, "ratio lars/raw = %.3f", lars_sum.average() / raw.average());
        std::cout << line << std::endl;
    }
    return 0;
}
