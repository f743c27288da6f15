/* A small C node for the tests: connects to a node with erl_interface's ei and makes one ei_rpc.
 *
 *   cnode_rpc COOKIE OWN_NAME TARGET_NODE WAIT_MS MODULE FUNCTION ARGS_FORMAT
 *
 * OWN_NAME is alive@host; ARGS_FORMAT is an ei_x_format argument list such as "[2.0]". After
 * connecting it waits WAIT_MS (so that anything the peer sends unasked arrives before the reply),
 * then calls ei_rpc and prints "OK <hex of the reply's external term format>" or "ERR <rc>".
 * The port of epmd comes from $ERL_EPMD_PORT, as for every ei program.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ei.h"

int main(int argc, char **argv) {
    if (argc != 8) {
        fprintf(stderr, "usage: %s COOKIE OWN_NAME TARGET WAIT_MS MODULE FUNCTION ARGS\n", argv[0]);
        return 2;
    }
    char *cookie = argv[1], *own = argv[2], *target = argv[3];
    long wait_ms = strtol(argv[4], NULL, 10);
    char *module = argv[5], *function = argv[6], *args = argv[7];

    char alive[256], host[256];
    const char *at = strchr(own, '@');
    if (at == NULL || (size_t)(at - own) >= sizeof(alive) || strlen(at + 1) >= sizeof(host)) {
        fprintf(stderr, "bad own name %s\n", own);
        return 2;
    }
    memcpy(alive, own, at - own);
    alive[at - own] = '\0';
    strcpy(host, at + 1);

    ei_init();
    ei_cnode ec;
    struct in_addr addr;
    addr.s_addr = htonl(0x7f000001);
    if (ei_connect_xinit(&ec, host, alive, own, (Erl_IpAddr)&addr, cookie,
                         (short)(time(NULL) & 0x7fff)) < 0) {
        fprintf(stderr, "ei_connect_xinit failed\n");
        return 2;
    }
    int fd = ei_connect(&ec, target);
    if (fd < 0) {
        printf("ERR connect %d\n", fd);
        return 1;
    }
    if (wait_ms > 0) {
        usleep((useconds_t)wait_ms * 1000);
    }

    ei_x_buff request, reply;
    ei_x_new(&request);
    if (ei_x_format_wo_ver(&request, args) < 0) {
        fprintf(stderr, "cannot parse args %s\n", args);
        return 2;
    }
    ei_x_new_with_version(&reply);
    int rc = ei_rpc(&ec, fd, module, function, request.buff, request.index, &reply);
    if (rc < 0) {
        printf("ERR rpc %d\n", rc);
        return 1;
    }
    printf("OK ");
    for (int i = 0; i < reply.index; i++) {
        printf("%02x", (unsigned char)reply.buff[i]);
    }
    printf("\n");
    ei_x_free(&request);
    ei_x_free(&reply);
    return 0;
}
