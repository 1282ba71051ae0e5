<%-- An absolute redirect (see META-INF/context.xml) into the shop application. --%><%
  response.sendRedirect("../shop/index.jsp?from=legacy");
%>
