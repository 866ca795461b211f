/* Tests for hf_hub: hf:// URLs, and plans made against an imitation of the hub
 * (tests/fixtures/download/hub) served by nginx (tests/e2e/nginx.sh). */
#include "check.h"
#include "fixtures.h"

#include <unistd.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/strbuf.h"
#include "ftpipe/transfer/hf_hub.h"

#define MAIN_COMMIT "1111111111111111111111111111111111111111"

static char *server_dir;
static int server_port;
static char *endpoint;

static bool start_server(void)
{
    char template[] = "/tmp/ftpipe-hub-XXXXXX";
    server_dir = ft_xstrdup(mkdtemp(template));
    server_port = fixture_nginx_start(server_dir);
    endpoint = ft_xasprintf("http://127.0.0.1:%d/hub", server_port);
    return server_port > 0;
}

static void stop_server(void)
{
    fixture_nginx_stop(server_dir);
    free(server_dir);
    free(endpoint);
}

TEST(parses_hf_urls)
{
    ft_hf_repo repo;
    CHECK_INT(ft_hf_parse_url("hf://Qwen/Qwen2.5-0.5B-Instruct", NULL, NULL, &repo), 0);
    CHECK_STR(repo.endpoint, "https://huggingface.co");
    CHECK_STR(repo.repo, "Qwen/Qwen2.5-0.5B-Instruct");
    CHECK_STR(repo.revision, "main");
    CHECK(!repo.is_dataset);
    ft_hf_repo_free(&repo);

    CHECK_INT(ft_hf_parse_url("hf://datasets/org/data@v2", NULL, "http://mirror.example/", &repo), 0);
    CHECK_STR(repo.endpoint, "http://mirror.example");
    CHECK_STR(repo.repo, "org/data");
    CHECK_STR(repo.revision, "v2");
    CHECK(repo.is_dataset);
    ft_hf_repo_free(&repo);

    CHECK_INT(ft_hf_parse_url("hf://gpt2", "refs/pr/1", "", &repo), 0);
    CHECK_STR(repo.repo, "gpt2");
    CHECK_STR(repo.revision, "refs/pr/1");
    CHECK_STR(repo.endpoint, "https://huggingface.co");
    ft_hf_repo_free(&repo);

    CHECK_INT(ft_hf_parse_url("hf://org/name@v1", "v2", NULL, &repo), -1);
    CHECK_STR(ft_error_message(), "hf://org/name@v1 asks for revision v1 but the stage says revision = v2: "
                                  "keep one of them");
    CHECK_INT(ft_hf_parse_url("hf://org/name/extra", NULL, NULL, &repo), -1);
    CHECK_STR(ft_error_message(), "hf://org/name/extra is not a repository URL: expected "
                                  "hf://ORG/NAME[@REVISION] or hf://datasets/ORG/NAME[@REVISION]");
    CHECK_INT(ft_hf_parse_url("hf://../name", NULL, NULL, &repo), -1);
    CHECK_INT(ft_hf_parse_url("hf://org/name@", NULL, NULL, &repo), -1);
    CHECK_INT(ft_hf_parse_url("hf://", NULL, NULL, &repo), -1);
}

TEST(only_safe_paths_pass)
{
    CHECK(ft_hf_path_is_safe("config.json"));
    CHECK(ft_hf_path_is_safe("onnx/model.onnx"));
    CHECK(ft_hf_path_is_safe(".gitattributes"));
    CHECK(!ft_hf_path_is_safe(""));
    CHECK(!ft_hf_path_is_safe("/etc/passwd"));
    CHECK(!ft_hf_path_is_safe("../x"));
    CHECK(!ft_hf_path_is_safe("a/../../x"));
    CHECK(!ft_hf_path_is_safe("a//b"));
    CHECK(!ft_hf_path_is_safe("a/./b"));
    CHECK(!ft_hf_path_is_safe("a/"));
}

static char *write_temp(const char *text)
{
    char template[] = "/tmp/ftpipe-index-XXXXXX";
    int fd = mkstemp(template);
    close(fd);
    ft_write_file_atomic(template, text, strlen(text));
    return ft_xstrdup(template);
}

TEST(index_names_its_shards_once_each)
{
    char *path = write_temp("{\"metadata\": {}, \"weight_map\": {\"b\": \"m-2.safetensors\", "
                            "\"a\": \"m-1.safetensors\", \"c\": \"m-2.safetensors\"}}");
    char **shards;
    size_t n;
    CHECK_INT(ft_hf_index_shards(path, &shards, &n), 0);
    CHECK_INT(n, 2);
    if (n == 2) {
        CHECK_STR(shards[0], "m-1.safetensors");
        CHECK_STR(shards[1], "m-2.safetensors");
    }
    for (size_t i = 0; i < n; i++)
        free(shards[i]);
    free(shards);
    unlink(path);
    free(path);

    path = write_temp("{\"weight_map\": {\"a\": \"../../escape.safetensors\"}}");
    CHECK_INT(ft_hf_index_shards(path, &shards, &n), -1);
    char *expected = ft_xasprintf("%s maps tensor a to \"../../escape.safetensors\", which is not a file name "
                                  "that can be saved safely", path);
    CHECK_STR(ft_error_message(), expected);
    free(expected);
    for (size_t i = 0; i < n; i++)
        free(shards[i]);
    free(shards);
    unlink(path);
    free(path);

    path = write_temp("{\"something\": 1}");
    CHECK_INT(ft_hf_index_shards(path, &shards, &n), -1);
    expected = ft_xasprintf("%s has no \"weight_map\" object: it is not a checkpoint index", path);
    CHECK_STR(ft_error_message(), expected);
    free(expected);
    free(shards);
    unlink(path);
    free(path);
}

/* --- plans against the imitation hub --- */

static void collect_log(void *context, const char *line) { ft_strbuf_printf(context, "%s\n", line); }

typedef struct {
    char *download_dir;
    ft_strbuf log;
    ft_fetch_options options;
    ft_hf_plan plan;
} planning;

static int plan(planning *p, const char *url, const char *revision, const char *const *requests, size_t n,
                const char *token)
{
    char template[] = "/tmp/ftpipe-plan-XXXXXX";
    p->download_dir = ft_xstrdup(mkdtemp(template));
    ft_strbuf_init(&p->log);
    ft_fetch_options_default(&p->options);
    p->options.on_log = collect_log;
    p->options.context = &p->log;
    p->options.bearer_token = token;
    p->options.retry_delay_ms = 10;
    ft_hf_repo repo;
    int result = ft_hf_parse_url(url, revision, endpoint, &repo);
    if (result == 0)
        result = ft_hf_plan_files(&repo, requests, n, p->download_dir, &p->options, &p->plan);
    ft_hf_repo_free(&repo);
    return result;
}

static void plan_done(planning *p)
{
    ft_hf_plan_free(&p->plan);
    ft_strbuf_free(&p->log);
    ft_remove_tree(p->download_dir);
    free(p->download_dir);
}

static char *plan_paths(const ft_hf_plan *plan)
{
    ft_strbuf text;
    ft_strbuf_init(&text);
    for (size_t i = 0; i < plan->n_files; i++)
        ft_strbuf_printf(&text, "%s%s", i ? " " : "", plan->files[i].path);
    char *taken = ft_strbuf_take(&text);
    ft_strbuf_free(&text);
    return taken;
}

#define CHECK_PATHS(plan, expected)            \
    do {                                       \
        char *check_paths = plan_paths(plan);  \
        CHECK_STR(check_paths, expected);      \
        free(check_paths);                     \
    } while (0)

TEST(sharded_model_is_followed_through_its_index)
{
    planning p;
    const char *requests[] = {"config.json", "model.safetensors", "tokenizer.json"};
    CHECK_INT(plan(&p, "hf://test-org/tiny-model", "main", requests, 3, NULL), 0);
    CHECK_STR(p.plan.commit, MAIN_COMMIT);
    CHECK_PATHS(&p.plan, "config.json model.safetensors.index.json tokenizer.json "
                         "model-00001-of-00002.safetensors model-00002-of-00002.safetensors");
    CHECK_STR(p.log.data, "model.safetensors is sharded: following model.safetensors.index.json\n"
                          "model.safetensors.index.json: received\n");
    if (p.plan.n_files == 5) {
        char *url = ft_xasprintf("%s/test-org/tiny-model/resolve/" MAIN_COMMIT "/model-00001-of-00002.safetensors",
                                 endpoint);
        CHECK_STR(p.plan.files[3].url, url);
        free(url);
        CHECK_INT(p.plan.files[3].size_bytes, 13);
        CHECK_STR(p.plan.files[3].sha256, "de9ac27bb15537d6ab329a2b55240f08d41046d670ea45084d5f32d7bb7f0b6e");
        CHECK(p.plan.files[0].sha256 == NULL);
    }
    /* The index itself is already in the download folder. */
    char *index = ft_path_join(p.download_dir, "model.safetensors.index.json");
    CHECK(ft_path_exists(index));
    free(index);
    plan_done(&p);
}

TEST(patterns_select_from_the_file_list)
{
    planning p;
    const char *safetensors[] = {"*.safetensors"};
    CHECK_INT(plan(&p, "hf://test-org/tiny-model", NULL, safetensors, 1, NULL), 0);
    CHECK_PATHS(&p.plan, "model-00001-of-00002.safetensors model-00002-of-00002.safetensors");
    plan_done(&p);

    /* '*' crosses folders, as huggingface_hub's patterns do; an index pulls in its shards. */
    const char *mixed[] = {"*.onnx", "*.json"};
    CHECK_INT(plan(&p, "hf://test-org/tiny-model", NULL, mixed, 2, NULL), 0);
    CHECK_PATHS(&p.plan, "onnx/model.onnx config.json model.safetensors.index.json tokenizer.json "
                         "model-00001-of-00002.safetensors model-00002-of-00002.safetensors");
    plan_done(&p);

    /* Nothing asked: the whole repository. */
    CHECK_INT(plan(&p, "hf://test-org/tiny-model", NULL, NULL, 0, NULL), 0);
    CHECK_PATHS(&p.plan, ".gitattributes README.md config.json model.safetensors.index.json "
                         "model-00001-of-00002.safetensors model-00002-of-00002.safetensors tokenizer.json "
                         "onnx/model.onnx");
    plan_done(&p);
}

TEST(revisions_and_datasets_resolve_to_their_commit)
{
    planning p;
    const char *config[] = {"config.json"};
    CHECK_INT(plan(&p, "hf://test-org/tiny-model@v1.0", NULL, config, 1, NULL), 0);
    CHECK_STR(p.plan.commit, "2222222222222222222222222222222222222222");
    char *url = ft_xasprintf("%s/test-org/tiny-model/resolve/2222222222222222222222222222222222222222/config.json",
                             endpoint);
    CHECK_STR(p.plan.files[0].url, url);
    free(url);
    plan_done(&p);

    CHECK_INT(plan(&p, "hf://datasets/test-org/tiny-data", "main", NULL, 0, NULL), 0);
    CHECK_PATHS(&p.plan, "train.jsonl");
    url = ft_xasprintf("%s/datasets/test-org/tiny-data/resolve/3333333333333333333333333333333333333333/train.jsonl",
                       endpoint);
    CHECK_STR(p.plan.files[0].url, url);
    free(url);
    plan_done(&p);
}

TEST(missing_names_say_what_the_repository_has)
{
    planning p;
    const char *typo[] = {"config.json", "tokenizer.jsn"};
    CHECK_INT(plan(&p, "hf://test-org/tiny-model", NULL, typo, 2, NULL), -1);
    CHECK_STR(ft_error_message(), "tokenizer.jsn is not in test-org/tiny-model at revision main; its files: "
                                  ".gitattributes, README.md, config.json, model.safetensors.index.json, "
                                  "model-00001-of-00002.safetensors, model-00002-of-00002.safetensors, "
                                  "tokenizer.json, onnx/model.onnx");
    plan_done(&p);

    const char *pattern[] = {"*.gguf"};
    CHECK_INT(plan(&p, "hf://test-org/tiny-model@v1.0", NULL, pattern, 1, NULL), -1);
    CHECK_STR(ft_error_message(), "no file matches *.gguf in test-org/tiny-model at revision v1.0; its files: "
                                  "config.json");
    plan_done(&p);

    CHECK_INT(plan(&p, "hf://test-org/absent", NULL, NULL, 0, NULL), -1);
    char *expected = ft_xasprintf("cannot download the file list of test-org/absent: %s/api/models/test-org/absent/"
                                  "revision/main?blobs=true answered 404 Not Found; check the repository name "
                                  "(test-org/absent) and the revision (main)", endpoint);
    CHECK_STR(ft_error_message(), expected);
    free(expected);
    plan_done(&p);
}

TEST(private_repository_needs_the_token)
{
    planning p;
    ft_hf_repo repo;
    CHECK_INT(ft_hf_parse_url("hf://private-org/gated-model", NULL, endpoint, &repo), 0);
    char *hint = ft_hf_auth_hint(&repo, false);
    CHECK_STR(hint, "private-org/gated-model may be private or gated, or may not exist: set HF_TOKEN to a token "
                    "that can read it");
    free(hint);
    hint = ft_hf_auth_hint(&repo, true);
    CHECK_STR(hint, "HF_TOKEN was refused for private-org/gated-model: check that the token is valid and can read "
                    "it (a gated model also needs its terms accepted on its page)");
    free(hint);
    hint = ft_hf_not_found_hint(&repo);
    CHECK_STR(hint, "check the file name and that revision main of private-org/gated-model has it");
    free(hint);
    ft_hf_repo_free(&repo);

    CHECK_INT(plan(&p, "hf://private-org/gated-model", NULL, NULL, 0, NULL), -1);
    char *expected = ft_xasprintf("cannot download the file list of private-org/gated-model: %s/api/models/"
                                  "private-org/gated-model/revision/main?blobs=true answered 401 Unauthorized; "
                                  "the server wants credentials this download lacks", endpoint);
    CHECK_STR(ft_error_message(), expected);
    free(expected);
    plan_done(&p);

    CHECK_INT(plan(&p, "hf://private-org/gated-model", NULL, NULL, 0, "test-token-123"), 0);
    CHECK_PATHS(&p.plan, "config.json");
    plan_done(&p);
}

TEST(files_of_another_commit_are_not_reused)
{
    /* An interrupted run fetched config.json when main was another commit. */
    char template[] = "/tmp/ftpipe-plan-XXXXXX";
    char *download_dir = ft_xstrdup(mkdtemp(template));
    char *marker = ft_path_join(download_dir, ".ftpipe-commit");
    char *stale = ft_path_join(download_dir, "config.json");
    ft_write_file_atomic(marker, "9999", 4);
    ft_write_file_atomic(stale, "old", 3);
    ft_fetch_options options;
    ft_fetch_options_default(&options);
    ft_hf_repo repo;
    CHECK_INT(ft_hf_parse_url("hf://test-org/tiny-model", NULL, endpoint, &repo), 0);
    const char *requests[] = {"config.json"};
    ft_hf_plan hub;
    CHECK_INT(ft_hf_plan_files(&repo, requests, 1, download_dir, &options, &hub), 0);
    CHECK(!ft_path_exists(stale));
    char *text = NULL;
    CHECK_INT(ft_read_file(marker, &text, NULL), 0);
    CHECK_STR(text, MAIN_COMMIT);
    free(text);
    /* The same commit again keeps what is there. */
    ft_write_file_atomic(stale, "kept", 4);
    ft_hf_plan_free(&hub);
    CHECK_INT(ft_hf_plan_files(&repo, requests, 1, download_dir, &options, &hub), 0);
    CHECK(ft_path_exists(stale));
    ft_hf_plan_free(&hub);
    ft_hf_repo_free(&repo);
    ft_remove_tree(download_dir);
    free(stale);
    free(marker);
    free(download_dir);
}

int main(void)
{
    RUN(parses_hf_urls);
    RUN(only_safe_paths_pass);
    RUN(index_names_its_shards_once_each);
    if (!start_server()) {
        printf("not ok nginx_started (see the nginx error log in %s)\n", server_dir);
        return 1;
    }
    RUN(sharded_model_is_followed_through_its_index);
    RUN(patterns_select_from_the_file_list);
    RUN(revisions_and_datasets_resolve_to_their_commit);
    RUN(missing_names_say_what_the_repository_has);
    RUN(private_repository_needs_the_token);
    RUN(files_of_another_commit_are_not_reused);
    stop_server();
    return check_done();
}
