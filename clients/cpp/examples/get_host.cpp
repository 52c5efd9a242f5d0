/* get_host [agent options] M C: like `lars get-host M C`. */
#include "common.h"

int main(int argc, char **argv)
{
    agent_opts o;
    int modid = 0, cmdid = 0;
    if (!parse_key_command(argc, argv, "get_host", o, modid, cmdid)) {
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
