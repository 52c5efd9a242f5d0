/* A program written against the ORIGINAL Lars lars_api.h, from the guide's
 * examples (example.cpp of chapter 11, the qps and simulator tools of
 * chapter 12): it includes only "lars_api.h" and <iostream>, and relies on
 * what the original header brought in (stdio, stdlib, unistd, pthread,
 * arpa/inet, string, vector, map, queue). It must compile unchanged with
 * plain g++ against our header and link with -llars. */
#include "lars_api.h"
#include <iostream>

struct ID
{
    int t_id;
    int modid;
    int cmdid;
};

void usage()
{
    printf("usage: ./example [modid] [cmdid]\n");
}

void *test_qps(void *args)
{
    int ret = 0;
    ID *id = (ID*)args;
    lars_client api;
    std::string ip;
    int port;
    ret = api.get_host(id->modid, id->cmdid, ip, port);
    if (ret == 0 || ret == 1 || ret == 3) {
        if (ret == 0) {
            api.report(id->modid, id->cmdid, ip, port, 0);
        }
    }
    else {
        printf("[%d,%d] get error %d\n", id->modid, id->cmdid, ret);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    int ret = 0;

    if (argc != 3) {
        usage();
        return 1;
    }

    int modid = atoi(argv[1]);
    int cmdid = atoi(argv[2]);
    lars_client api;

    std::string ip; 
    int port;

    //1. lars_api 初始化(只调用一次)
    ret = api.reg_init(modid, cmdid);
    if (ret != 0) {
        std::cout << "modid " << modid << ", cmdid " << cmdid << " still not exist host, after register, ret = " << ret << std::endl;
    }

    //2. 获取modid/cmdid下全部的host的ip+port
    route_set route;
    ret = api.get_route(modid, cmdid, route);
    if (ret == 0) {
        std::cout << "get route succ!" << std::endl;
        for (route_set_it it = route.begin(); it != route.end(); it++) {
            std::cout << "ip = " << (*it).first << ", port = " << (*it).second << std::endl;
        }
    }

    //3. 获取一个host的ip+port
    int cnt = 0;
    std::map<std::string, std::pair<int, int>> result;
    ret = api.get_host(modid, cmdid, ip, port);
    if (ret == 0) {
        std::cout << "host is " << ip << ":" << port << std::endl;
        result[ip] = std::pair<int, int>(1, 0);
        if (cnt % 3 == 0) {
            api.report(modid, cmdid, ip, port, 1);
        }
        else {
            api.report(modid, cmdid, ip, port, 0);
        }
    }
    else if (ret == lars::RET_NOEXIST) {
        std::cout << modid << "," << cmdid << " not exist" << std::endl;
    }

    // what lars_reactor.h brought in: pthread, unistd, arpa/inet, queue
    ID id = {0, modid, cmdid};
    pthread_t tid;
    pthread_create(&tid, NULL, test_qps, &id);
    pthread_join(tid, NULL);
    usleep(1000);
    struct in_addr inaddr;
    inet_aton("127.0.0.1", &inaddr);
    std::queue<int> q;
    q.push(ntohl(inaddr.s_addr) == 0x7f000001 ? 1 : 0);
    std::vector<ip_port> v(route.begin(), route.end());
    printf("checks %d, %zu hosts\n", q.front(), v.size());

    return 0;
}
