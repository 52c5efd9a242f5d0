/* The C API from C99: c_example BASE_PORT MODID CMDID prints the route and
 * one host, reports it, and checks bad input; exits non-zero on failure. */
#include "lars.h"

#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    lars_client_t *c = NULL;
    lars_host_t hosts[8], h;
    size_t n = 0, i;
    int ret, modid, cmdid;
    if (argc != 4) {
        fprintf(stderr, "usage: c_example BASE_PORT MODID CMDID\n");
        return 2;
    }
    modid = atoi(argv[2]);
    cmdid = atoi(argv[3]);
    ret = lars_client_new("127.0.0.1", (uint16_t)atoi(argv[1]), 3, 100, &c);
    if (ret != LARS_RET_SUCC) {
        fprintf(stderr, "lars_client_new: %s\n", lars_strerror(ret));
        return 1;
    }
    ret = lars_reg_init(c, modid, cmdid);
    if (ret == LARS_RET_SUCC) {
        ret = lars_get_route(c, modid, cmdid, hosts, 8, &n);
    }
    for (i = 0; ret == LARS_RET_SUCC && i < n; i++) {
        printf("route %s:%u\n", hosts[i].ip, (unsigned)hosts[i].port);
    }
    if (ret == LARS_RET_SUCC) {
        ret = lars_get_host(c, modid, cmdid, &h);
    }
    if (ret == LARS_RET_SUCC) {
        printf("host is %s:%u\n", h.ip, (unsigned)h.port);
        ret = lars_report_latency(c, modid, cmdid, h.ip, h.port, 0, 2);
    }
    if (ret != LARS_RET_SUCC) {
        fprintf(stderr, "lars: %s\n", lars_strerror(ret));
        lars_client_free(c);
        return 1;
    }
    if (lars_get_host(c, -1, cmdid, &h) != LARS_ERR_INVALID || lars_get_host(NULL, modid, cmdid, &h) != LARS_ERR_INVALID ||
        lars_report(c, modid, cmdid, "300.1.1.1", 80, 0) != LARS_ERR_INVALID ||
        lars_get_route(c, modid, cmdid, hosts, 0, &n) != LARS_ERR_BUFFER || n == 0) {
        fprintf(stderr, "bad input was not rejected\n");
        lars_client_free(c);
        return 1;
    }
    lars_client_free(c);
    lars_client_free(NULL);
    printf("c api ok\n");
    return 0;
}
