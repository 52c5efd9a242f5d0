/* get_route [agent options] M C: like `lars get-route M C`. */
#include "common.h"

int main(int argc, char **argv)
{
    agent_opts o;
    int modid = 0, cmdid = 0;
    if (!parse_key_command(argc, argv, "get_route", o, modid, cmdid)) {
        return 2;
    }
    lars_client *api = open_client(o);
    if (api == NULL) {
        return 1;
    }
    reg_init_noted(*api, modid, cmdid);
    route_set route;
    int ret = api->get_route(modid, cmdid, route);
    delete api;
    if (ret != lars::RET_SUCC) {
        std::cerr << "lars: get_route modid " << modid << ", cmdid " << cmdid << " (agent "
                  << agent_addr(o, modid, cmdid) << "): " << lars_client::strerror(ret) << std::endl;
        return 1;
    }
    if (route.empty()) {
        std::cerr << "modid " << modid << ", cmdid " << cmdid << ": no hosts" << std::endl;
        return 1;
    }
    for (route_set_it it = route.begin(); it != route.end(); ++it) {
        std::cout << it->first << ":" << it->second << std::endl;
    }
    return 0;
}
