// `query` mode: one SQL query over the segments UpsertMirror built, answered by pinot-core's
// single-stage engine as a server + broker pair would: the broker's query optimizer, the
// server's instance plan over segment contexts whose queryable docs come from the upsert
// metadata manager (what RealtimeTableDataManager does per query), the server's DataTable,
// then the broker's reduce. Output: one line {"response": <the broker's JSON response>}.
// Not run: the broker's routing, quota, access control and table-name translation.
package cdc.pinot;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import org.apache.pinot.common.datatable.DataTable;
import org.apache.pinot.common.datatable.DataTableFactory;
import org.apache.pinot.common.metrics.BrokerMetrics;
import org.apache.pinot.common.request.BrokerRequest;
import org.apache.pinot.common.request.PinotQuery;
import org.apache.pinot.common.response.broker.BrokerResponseNative;
import org.apache.pinot.core.plan.maker.InstancePlanMakerImplV2;
import org.apache.pinot.core.query.optimizer.QueryOptimizer;
import org.apache.pinot.core.query.reduce.BrokerReduceService;
import org.apache.pinot.core.query.request.context.QueryContext;
import org.apache.pinot.core.query.request.context.utils.QueryContextConverterUtils;
import org.apache.pinot.core.transport.ServerRoutingInstance;
import org.apache.pinot.segment.spi.MutableSegment;
import org.apache.pinot.segment.spi.SegmentContext;
import org.apache.pinot.spi.config.table.TableType;
import org.apache.pinot.spi.env.PinotConfiguration;
import org.apache.pinot.spi.query.QueryThreadContext;
import org.apache.pinot.spi.utils.CommonConstants.Broker;
import org.apache.pinot.spi.utils.CommonConstants.Server;
import org.apache.pinot.spi.utils.JsonUtils;
import org.apache.pinot.sql.parsers.CalciteSqlCompiler;
import org.apache.pinot.sql.parsers.CalciteSqlParser;

final class SqlQuery {
  private SqlQuery() {
  }

  static void run(UpsertMirror mirror, String sql, Main.JsonLines lines) throws Exception {
    // Broker: parse (SET options included) and optimize against the table's schema.
    PinotQuery pinotQuery = CalciteSqlParser.compileToPinotQuery(sql);
    new QueryOptimizer().optimize(pinotQuery, mirror._schema);
    BrokerRequest brokerRequest = CalciteSqlCompiler.convertToBrokerRequest(pinotQuery);

    // Server: segment contexts with the upsert view, the instance plan, a DataTable.
    QueryContext queryContext = QueryContextConverterUtils.getQueryContext(pinotQuery);
    queryContext.setEndTimeMs(System.currentTimeMillis() + Server.DEFAULT_QUERY_EXECUTOR_TIMEOUT_MS);
    List<SegmentContext> contexts = new ArrayList<>();
    mirror.ensureSegment();
    for (MutableSegment segment : mirror.segments()) {
      contexts.add(new SegmentContext(segment));
    }
    mirror.upsertManager().setSegmentContexts(contexts, queryContext.getQueryOptions());
    ExecutorService executor = Executors.newFixedThreadPool(2);
    BrokerReduceService reduce =
        new BrokerReduceService(new PinotConfiguration(Map.of(Broker.CONFIG_OF_MAX_REDUCE_THREADS_PER_QUERY, 1)));
    BrokerResponseNative response;
    // A query thread context without resource accounting (Pinot's own no-op accountant).
    try (QueryThreadContext ignored = QueryThreadContext.openForSseTest()) {
      DataTable dataTable = new InstancePlanMakerImplV2().makeInstancePlan(contexts, queryContext,
          QueryThreadContext.contextAwareExecutorService(executor)).execute().toDataTable();
      // Broker: reduce the server's serialised answer.
      Map<ServerRoutingInstance, DataTable> fromServers = Map.of(
          new ServerRoutingInstance("localhost", 0, TableType.REALTIME), DataTableFactory.getDataTable(
              dataTable.toBytes()));
      response = reduce.reduceOnDataTable(brokerRequest, brokerRequest, fromServers, Broker.DEFAULT_BROKER_TIMEOUT_MS,
          BrokerMetrics.get());
    } finally {
      reduce.shutDown();
      executor.shutdownNow();
    }
    lines.write(Map.of("response", JsonUtils.stringToJsonNode(response.toJsonString())));
    lines.flush();
  }
}
