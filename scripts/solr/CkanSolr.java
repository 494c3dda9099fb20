// Apache Solr 9 on loopback for ckanext-webhooks' demo, tests and
// benchmarks: scripts/solr.sh starts it on a Solr home it has laid out (a
// `ckan` core on CKAN's own schema.xml). Solr runs in an embedded Jetty,
// through JettySolrRunner from solr-test-framework, which listens on
// 127.0.0.1 only.
//
//   java -cp CLASSPATH CkanSolr SOLR_HOME PORT PORT_FILE
//
// PORT 0 takes a free port. Once the cores are loaded, the port it listens on
// is written to PORT_FILE; a core that failed to load stops it with exit
// status 1. A TERM or Ctrl-C stops Jetty and closes the cores.

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.nio.file.StandardCopyOption;
import java.util.Map;

import org.apache.solr.core.CoreContainer;
import org.apache.solr.embedded.JettyConfig;
import org.apache.solr.embedded.JettySolrRunner;

public final class CkanSolr {
    private CkanSolr() {
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 3) {
            System.err.println("usage: CkanSolr SOLR_HOME PORT PORT_FILE");
            System.exit(2);
        }
        String home = args[0];
        int port = Integer.parseInt(args[1]);
        Path portFile = Paths.get(args[2]);

        JettyConfig config = JettyConfig.builder()
                .setPort(port)
                .setContext("/solr")
                .stopAtShutdown(true)
                .waitForLoadingCoresToFinish(120_000L)
                .build();
        JettySolrRunner solr = new JettySolrRunner(home, config);
        solr.start();

        CoreContainer cores = solr.getCoreContainer();
        Map<String, CoreContainer.CoreLoadFailure> failures =
                cores.getCoreInitFailures();
        if (!failures.isEmpty() || !cores.getLoadedCoreNames().contains("ckan")) {
            failures.forEach((name, failure) -> {
                System.err.println("ckan-solr: core " + name + " failed to load:");
                failure.exception.printStackTrace();
            });
            System.err.println("ckan-solr: no `ckan` core; stopping");
            solr.stop();
            System.exit(1);
        }

        // written whole or not at all: scripts/solr.sh polls for it
        Path partial = portFile.resolveSibling(portFile.getFileName() + ".partial");
        Files.write(partial, (solr.getLocalPort() + "\n").getBytes(StandardCharsets.US_ASCII));
        Files.move(partial, portFile, StandardCopyOption.ATOMIC_MOVE);
        System.out.println("ckan-solr: listening on http://127.0.0.1:"
                + solr.getLocalPort() + "/solr/ckan");
        // Jetty's threads keep the JVM running until a signal stops it
    }
}
