/* get_host [agent options] M C: like `lars get-host M C`. */
#include "common.h"

int main(int argc, char **argv)
{
    agent_opts o;
    std::vector<std::string> args;
    if (!parse_agent_opts(argc, argv, o, args)) {
        return 2;
    }
    int modid = 0, cmdid = 0;
    if (args.size() != 2) {
        std::cerr << "usage: get_host [--agent-ip IP] [--base-port PORT] [--ports N] "
                     "[--timeout-ms MS] MODID CMDID"
                  << std::endl;
        return 2;
    }
    if (!parse_id(args[0], "modid", modid) || !parse_id(args[1], "cmdid", cmdid)) {
        return 2;
    }
    lars_client *api = open_client(o);
    if (api == NULL) {
        return 1;
    }
    reg_init_noted(*api, modid, cmdid);
    std::string ip;
    int port = 0;
    int ret = api->get_host(modid, cmdid, ip, port);
    if (ret != lars::RET_SUCC) {
        std::cerr << "lars: get_host modid " << modid << ", cmdid " << cmdid << " (agent "
                  << agent_addr(o, modid, cmdid) << "): " << lars_client::strerror(ret) << std::endl;
        delete api;
        return 1;
    }
    std::cout << "host is " << ip << ":" << port << std::endl;
    delete api;
    return 0;
}
